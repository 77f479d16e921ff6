import Foundation
import KDTensor

/// Ranks of a data-parallel job as threads of the test process (`ThreadTransport`): the
/// collectives and the data-parallel step run as they do under MPI, without MPI.
public enum ThreadRanks {
    /// Runs `body(world)` on `n` ranks at once, one thread each (a pool only as wide as the cores
    /// would leave ranks waiting to start), each with 1 worker thread; their results in rank order.
    public static func run<R: Sendable>(_ n: Int, timeout: Double = 30, _ body: @escaping @Sendable (World) throws -> R) throws -> [R] {
        let hub = ThreadTransport.Hub(size: n)
        let box = Box<R>(count: n)
        let done = DispatchGroup()
        for r in 0..<n {
            done.enter()
            Thread {
                Parallel.configure(threads: 1)
                let world = World(transport: hub.transport(rank: r))
                world.timeout = timeout
                let outcome = Result { try body(world) }
                box.lock.withLock { box.values[r] = outcome }
                done.leave()
            }.start()
        }
        done.wait()
        return try box.values.map { try $0!.get() }
    }

    final class Box<R>: @unchecked Sendable {
        var values: [Result<R, Error>?]
        let lock = NSLock()
        init(count: Int) { values = Array(repeating: nil, count: count) }
    }
}
