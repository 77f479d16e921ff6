import CBLAS
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Work splitting with a fixed partition per thread count, so results are bit-identical for a
/// given `threads` regardless of scheduling.
public enum Parallel {
    /// The worker count of the calling thread (set by `configure` on that thread; 1 by default).
    /// Per thread, so two computations in one process (tests, a trainer evaluating while another
    /// model infers) never change each other's partitions — which would change their results.
    public static var threads: Int {
        guard let p = pthread_getspecific(key) else { return 1 }
        return Int(bitPattern: p)
    }

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    /// Sets the calling thread's worker count and keeps OpenBLAS single-threaded: kdtool splits work itself.
    public static func configure(threads: Int) {
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: max(1, threads)))
        openblas_set_num_threads(1)
    }

    /// Calls `body(chunk, range)` for `parts` contiguous chunks of 0..<count, in parallel.
    @inlinable
    public static func chunks(_ count: Int, parts: Int = threads, _ body: (Int, Range<Int>) -> Void) {
        let p = max(1, min(parts, count))
        if p == 1 {
            body(0, 0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: p) { i in
                let lo = count * i / p
                let hi = count * (i + 1) / p
                work.value(i, lo..<hi)
            }
        }
    }
}

/// Kernels hand raw buffers to worker threads; each worker writes a disjoint part.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ value: T) { self.value = value }
}

/// The vector instructions this build of KDTensor was compiled for (Package.swift chooses: AVX2 +
/// FMA everywhere on x86-64, AVX-512 when the building machine has it).
public enum VectorUnits {
    #if KDTOOL_AVX512
        /// Whether the direct convolution has its 16-lane (512-bit) kernels.
        public static let wide = true
        public static let name = "AVX-512"
        /// The /proc/cpuinfo flags a CPU needs to run this build.
        public static let requiredCPUFlags = ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]
    #elseif arch(x86_64)
        public static let wide = false
        public static let name = "AVX2"
        public static let requiredCPUFlags = ["avx2", "fma"]
    #else
        public static let wide = false
        public static let name = "native"
        public static let requiredCPUFlags: [String] = []
    #endif
}
