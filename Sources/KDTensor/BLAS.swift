import CBLAS

/// Row-major single-precision GEMM, C = alpha·op(A)·op(B) + beta·C, split over rows of C across
/// `Parallel.threads` when the product is large enough to pay for it.
public enum BLAS {
    public static func gemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int = Parallel.threads
    ) {
        guard m > 0, n > 0 else { return }
        let ta = transA ? CblasTrans : CblasNoTrans
        let tb = transB ? CblasTrans : CblasNoTrans
        let parts = m * n * k >= 1 << 18 ? min(threads, m) : 1
        Parallel.chunks(m, parts: parts) { _, rows in
            // Row block r of op(A): A[r, :] when not transposed, column block A[:, r] when transposed.
            let aOffset = transA ? rows.lowerBound : rows.lowerBound * lda
            cblas_sgemm(
                CblasRowMajor, ta, tb, Int32(rows.count), Int32(n), Int32(k), alpha, a + aOffset, Int32(lda), b,
                Int32(ldb), beta, c + rows.lowerBound * ldc, Int32(ldc))
        }
    }
}

extension BLAS {
    /// OpenBLAS's own multi-threaded sgemm speed on n×n matrices: the peer that kernel benchmarks
    /// report against. Leaves OpenBLAS single-threaded again (kdtool splits work itself).
    public static func referenceGFLOPs(n: Int, threads: Int, repetitions: Int = 5) -> Double {
        openblas_set_num_threads(Int32(threads))
        defer { openblas_set_num_threads(1) }
        let a = Tensor(shape: [n, n], repeating: 0.5)
        let b = Tensor(shape: [n, n], repeating: 0.25)
        let c = Tensor(zeros: [n, n])
        var best = Double.infinity
        for _ in 0..<repetitions {
            var t0 = timespec()
            var t1 = timespec()
            clock_gettime(CLOCK_MONOTONIC, &t0)
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a.pointer, Int32(n), b.pointer, Int32(n), 0,
                c.pointer, Int32(n))
            clock_gettime(CLOCK_MONOTONIC, &t1)
            best = min(best, Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }
}

#if canImport(Glibc)
    import Glibc
#endif
