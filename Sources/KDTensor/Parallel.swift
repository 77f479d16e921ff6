import CBLAS
import Dispatch

/// Work splitting with a fixed partition per thread count, so results are bit-identical for a
/// given `threads` regardless of scheduling.
public enum Parallel {
    nonisolated(unsafe) public static var threads = 1

    /// Sets the worker count and keeps OpenBLAS single-threaded: kdtool splits work itself.
    public static func configure(threads: Int) {
        self.threads = max(1, threads)
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
@usableFromInline
struct UncheckedSendable<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
