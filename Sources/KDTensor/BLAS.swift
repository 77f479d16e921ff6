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

/// Which of OpenBLAS's kernel sets this process runs, and a better one when OpenBLAS fell back.
///
/// Debian's OpenBLAS (0.3.21) picks its kernels from the CPU model number when it loads. A CPU
/// newer than the library (an Emerald Rapids Xeon, model 207, say) is not in its table, and it
/// falls back to the SSE3 "Prescott" kernels: sgemm at 17 GFLOP/s per core instead of 105 with
/// the AVX-512 ones (measured on this project's machines). An AMD Zen 5 (family 26) is not in it
/// either: OpenBLAS takes it for a Haswell and runs 256-bit kernels on a CPU with full 512-bit
/// units, sgemm at 106 GFLOP/s per core against 214 with the SkylakeX kernels (measured, n = 1024).
/// OpenBLAS only reads its choice from `OPENBLAS_CORETYPE` at load time, so the fix is to set it
/// and start the process again.
public enum BLASCore {
    /// The kernel set OpenBLAS chose, e.g. "SkylakeX", "Haswell", "Prescott".
    public static var name: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// Kernel sets OpenBLAS uses when it does not recognise the CPU.
    static let fallbacks: Set<String> = ["prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "unknown"]

    /// The kernel set to ask for instead of `current`, given the CPU's feature flags (as in
    /// /proc/cpuinfo), or nil when `current` is already a fitting one.
    public static func better(than current: String, cpuFlags flags: Set<String>) -> String? {
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains)
        // The 256-bit kernel sets on a CPU with AVX-512: a CPU the library does not know.
        let narrow: Set<String> = ["haswell", "zen", "sandybridge"]
        guard fallbacks.contains(current.lowercased()) || (avx512 && narrow.contains(current.lowercased())) else { return nil }
        if avx512 { return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        if flags.contains("avx") { return "SandyBridge" }
        return nil
    }

    /// The feature flags of the first CPU in /proc/cpuinfo (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        #if os(Linux)
            guard let f = fopen("/proc/cpuinfo", "r") else { return [] }
            defer { fclose(f) }
            var line: UnsafeMutablePointer<CChar>?
            var size = 0
            defer { free(line) }
            while getline(&line, &size, f) > 0, let l = line {
                let text = String(cString: l)
                guard text.hasPrefix("flags") else { continue }
                return Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == ":" }).map(String.init))
            }
        #endif
        return []
    }

    /// When OpenBLAS fell back to slow kernels and the user did not choose any
    /// (`OPENBLAS_CORETYPE` unset), sets `OPENBLAS_CORETYPE` to the fitting kernel set and
    /// replaces this process with a fresh copy of itself (same arguments, same descriptors).
    /// Returns only when nothing needed doing or the restart failed.
    public static func restartWithBetterKernelsIfNeeded() {
        #if os(Linux)
            guard getenv("OPENBLAS_CORETYPE") == nil,
                let core = better(than: name, cpuFlags: cpuFlags())
            else { return }
            setenv("OPENBLAS_CORETYPE", core, 1)
            execv("/proc/self/exe", CommandLine.unsafeArgv)
            unsetenv("OPENBLAS_CORETYPE")  // exec failed: carry on with the slow kernels
        #endif
    }
}
