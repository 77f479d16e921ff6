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
