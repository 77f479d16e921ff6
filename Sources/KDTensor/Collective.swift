import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Moves bytes between the processes (ranks) of a data-parallel job. kdtool's collectives
/// (`World`) are built on this one point-to-point primitive, so their reduction order is kdtool's
/// own and fixed, whatever the transport: MPI (the KDMPI module, loaded only under `mpirun`) or
/// threads of one process (`ThreadTransport`, for tests).
public protocol Transport: AnyObject, Sendable {
    var rank: Int { get }
    var size: Int { get }
    /// Sends `send.bytes` to rank `send.to` and receives exactly `receive.bytes.count` bytes from
    /// rank `receive.from`, both in flight together (so a ring of exchanges cannot deadlock).
    /// Throws `CollectiveError` when the peer is gone, or silent for longer than `timeout` seconds.
    func exchange(
        send: (bytes: UnsafeRawBufferPointer, to: Int)?, receive: (bytes: UnsafeMutableRawBufferPointer, from: Int)?, tag: Int32,
        timeout: Double, what: String) throws
    /// Stops every rank of the job now (MPI_Abort), with `code` as the job's exit status.
    func abort(code: Int32) -> Never
    /// Ends the job's communication cleanly (MPI_Finalize); called once, at a successful exit.
    func finish()
    /// Whether another thread than the one that started the job may call `exchange`, one thread at
    /// a time (MPI_THREAD_SERIALIZED): what overlapping the gradient sum with backward needs.
    var allowsOtherThreads: Bool { get }
    /// Whether every rank runs on this machine (their messages are memory copies by the CPUs
    /// that also compute, so overlapping them with backward gains nothing); nil: unknown.
    var allOnOneNode: Bool? { get }
}

/// A collective operation that could not complete: a rank died, hung, or disagreed.
public struct CollectiveError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The ranks of a data-parallel job and the collectives kdtool uses: a deterministic ring
/// allreduce (sum), broadcast and gather. Every rank must call the same collectives in the same
/// order with the same sizes. A single process is a world of one, where every collective is free.
///
///     let world = Cluster.world
///     try world.allreduceSum(&gradients, what: "gradients")   // every rank gets the same bits
///     if world.isRoot { /* write the output */ }
public final class World: @unchecked Sendable {
    public let transport: (any Transport)?
    public let rank: Int
    public let size: Int
    /// Seconds a rank waits for a peer's message before it declares the peer dead or stuck.
    public var timeout: Double = 600
    /// Bytes this rank has sent, and wall seconds spent inside collectives (for the step breakdown).
    public private(set) var bytesSent = 0
    public private(set) var seconds = 0.0
    public private(set) var calls = 0

    public init(transport: (any Transport)?) {
        self.transport = transport
        rank = transport?.rank ?? 0
        size = transport?.size ?? 1
    }

    /// One process, no communication.
    public static let solo = World(transport: nil)

    public var isRoot: Bool { rank == 0 }
    public var isDistributed: Bool { size > 1 }

    public func resetStatistics() {
        bytesSent = 0
        seconds = 0
        calls = 0
    }

    static let tagAllreduce: Int32 = 11
    static let tagBroadcast: Int32 = 12
    static let tagGather: Int32 = 13

    private func timed<R>(_ body: () throws -> R) rethrows -> R {
        let t0 = monotonicSeconds()
        defer {
            seconds += monotonicSeconds() - t0
            calls += 1
        }
        return try body()
    }

    private func exchange(
        _ send: (UnsafeRawBufferPointer, Int)?, _ receive: (UnsafeMutableRawBufferPointer, Int)?, tag: Int32, what: String
    ) throws {
        guard let transport else { return }
        bytesSent += send?.0.count ?? 0
        try transport.exchange(
            send: send.map { (bytes: $0.0, to: $0.1) }, receive: receive.map { (bytes: $0.0, from: $0.1) }, tag: tag, timeout: timeout,
            what: what)
    }

    /// Element-wise sum over all ranks, in place; every rank ends with the same bits.
    ///
    /// A ring: reduce-scatter, then all-gather, 2·(N−1)/N of the buffer sent per rank. Chunk c is
    /// summed starting at rank c and going round the ring, always in that order, so the result
    /// depends only on the inputs and N — never on timing or on which algorithm MPI would pick.
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>, what: String) throws { try ringSum(values, what: what) }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>, what: String) throws { try ringSum(values, what: what) }

    public func allreduceSum(_ values: inout [Float], what: String) throws {
        try values.withUnsafeMutableBufferPointer { try ringSum($0, what: what) }
    }

    public func allreduceSum(_ values: inout [Double], what: String) throws {
        try values.withUnsafeMutableBufferPointer { try ringSum($0, what: what) }
    }

    /// The ring, specialised here for each element type (the public entry points are concrete, so
    /// the per-element addition is not a generic call).
    func ringSum<T: BinaryFloatingPoint>(_ values: UnsafeMutableBufferPointer<T>, what: String) throws {
        guard size > 1, let base = values.baseAddress else { return }
        try timed {
            let n = values.count
            let p = size
            func bounds(_ c: Int) -> Range<Int> { (n * c / p)..<(n * (c + 1) / p) }
            var scratch = [T](repeating: 0, count: (n + p - 1) / p + 1)
            let next = (rank + 1) % p
            let previous = (rank + p - 1) % p
            for s in 0..<(p - 1) {
                let out = bounds((rank - s + p) % p)
                let inc = bounds((rank - s - 1 + 2 * p) % p)
                try scratch.withUnsafeMutableBytes { sb in
                    try exchange(
                        (UnsafeRawBufferPointer(start: base + out.lowerBound, count: out.count * MemoryLayout<T>.stride), next),
                        (UnsafeMutableRawBufferPointer(start: sb.baseAddress, count: inc.count * MemoryLayout<T>.stride), previous),
                        tag: Self.tagAllreduce, what: what)
                }
                scratch.withUnsafeBufferPointer { sp in
                    let (src, dst) = (sp.baseAddress!, base + inc.lowerBound)
                    for j in 0..<inc.count { dst[j] = src[j] + dst[j] }
                }
            }
            for s in 0..<(p - 1) {
                let out = bounds((rank + 1 - s + p) % p)
                let inc = bounds((rank - s + p) % p)
                try exchange(
                    (UnsafeRawBufferPointer(start: base + out.lowerBound, count: out.count * MemoryLayout<T>.stride), next),
                    (UnsafeMutableRawBufferPointer(start: base + inc.lowerBound, count: inc.count * MemoryLayout<T>.stride), previous),
                    tag: Self.tagAllreduce, what: what)
            }
        }
    }

    /// Root's bytes to every rank (a binomial tree: ⌈log₂ N⌉ rounds). Every rank passes a buffer of
    /// the same size; the others' contents are replaced.
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int = 0, what: String) throws {
        guard size > 1 else { return }
        try timed {
            let me = (rank - root + size) % size  // position relative to the root
            var mask = 1
            while mask < size {
                if me < mask {
                    let peer = me + mask
                    if peer < size {
                        try exchange((UnsafeRawBufferPointer(bytes), (peer + root) % size), nil, tag: Self.tagBroadcast, what: what)
                    }
                } else if me < 2 * mask {
                    try exchange(nil, (bytes, (me - mask + root) % size), tag: Self.tagBroadcast, what: what)
                }
                mask *= 2
            }
        }
    }

    /// Root's array (of any length) to every rank; the others' argument is ignored.
    public func broadcast<T: BitwiseCopyable>(_ values: [T], root: Int = 0, what: String) throws -> [T] {
        guard size > 1 else { return values }
        var count = [UInt64(values.count)]
        try count.withUnsafeMutableBytes { try broadcast($0, root: root, what: what + " (size)") }
        guard count[0] <= UInt64(Int.max / MemoryLayout<T>.stride) else { throw CollectiveError("\(what): size out of range") }
        var out = rank == root ? values : [T](unsafeUninitializedCapacity: Int(count[0])) { _, n in n = Int(count[0]) }
        try out.withUnsafeMutableBytes { try broadcast($0, root: root, what: what) }
        return out
    }

    /// Root's value of a flag, on every rank (decisions only root can make: early stopping).
    public func agree(_ flag: Bool, what: String) throws -> Bool { try broadcast([flag ? 1 : 0] as [UInt8], what: what)[0] != 0 }

    /// Every rank's bytes at `root`, in rank order (nil elsewhere).
    public func gather(_ bytes: [UInt8], root: Int = 0, what: String) throws -> [[UInt8]]? {
        guard size > 1 else { return [bytes] }
        return try timed {
            if rank != root {
                let count = [UInt64(bytes.count)]
                try count.withUnsafeBytes { try exchange(($0, root), nil, tag: Self.tagGather, what: what) }
                try bytes.withUnsafeBytes { try exchange(($0, root), nil, tag: Self.tagGather, what: what) }
                return nil
            }
            var parts: [[UInt8]] = []
            for r in 0..<size {
                if r == root {
                    parts.append(bytes)
                    continue
                }
                var count = [UInt64(0)]
                try count.withUnsafeMutableBytes { try exchange(nil, ($0, r), tag: Self.tagGather, what: what) }
                guard count[0] <= UInt64(1 << 40) else { throw CollectiveError("\(what): rank \(r) announced \(count[0]) bytes") }
                var part = [UInt8](repeating: 0, count: Int(count[0]))
                try part.withUnsafeMutableBytes { try exchange(nil, ($0, r), tag: Self.tagGather, what: what) }
                parts.append(part)
            }
            return parts
        }
    }

    /// Every rank's bytes on every rank, in rank order.
    public func allgather(_ bytes: [UInt8], what: String) throws -> [[UInt8]] {
        guard size > 1 else { return [bytes] }
        let parts = try gather(bytes, what: what)
        let lengths = try broadcast((parts ?? []).map { UInt64($0.count) }, what: what + " (lengths)")
        let joined = try broadcast((parts ?? []).flatMap { $0 }, what: what)
        var out: [[UInt8]] = []
        var at = 0
        for l in lengths {
            guard l <= UInt64(joined.count - at) else { throw CollectiveError("\(what): inconsistent lengths") }
            out.append(Array(joined[at..<(at + Int(l))]))
            at += Int(l)
        }
        return out
    }

    /// Stops the whole job (every rank) with `code`; a world of one just exits.
    public func abort(code: Int32) -> Never {
        if let transport { transport.abort(code: code) }
        exit(code)
    }
}

/// The job this process belongs to: set once at start-up (by kdtool's entry point, from the
/// launcher's environment), a world of one otherwise.
public enum Cluster {
    nonisolated(unsafe) public static var world = World.solo
}

/// Ranks as threads of one process, for testing collectives without MPI: messages are copied
/// into per-(sender, receiver, tag) queues.
public final class ThreadTransport: Transport, @unchecked Sendable {
    public final class Hub: @unchecked Sendable {
        let size: Int
        let lock = Mutex<[String: [[UInt8]]]>([:])
        public init(size: Int) { self.size = size }
        public func transport(rank: Int) -> ThreadTransport { ThreadTransport(hub: self, rank: rank) }
    }

    let hub: Hub
    public let rank: Int
    public var size: Int { hub.size }

    init(hub: Hub, rank: Int) {
        self.hub = hub
        self.rank = rank
    }

    public func exchange(
        send: (bytes: UnsafeRawBufferPointer, to: Int)?, receive: (bytes: UnsafeMutableRawBufferPointer, from: Int)?, tag: Int32,
        timeout: Double, what: String
    ) throws {
        if let send {
            let key = "\(rank)>\(send.to)#\(tag)"
            let copy = Array(send.bytes)
            hub.lock.withLock { $0[key, default: []].append(copy) }
        }
        guard let receive else { return }
        let key = "\(receive.from)>\(rank)#\(tag)"
        let deadline = monotonicSeconds() + timeout
        while true {
            let message: [UInt8]? = hub.lock.withLock { queues in
                guard var q = queues[key], !q.isEmpty else { return nil }
                let m = q.removeFirst()
                queues[key] = q
                return m
            }
            if let message {
                guard message.count == receive.bytes.count else {
                    throw CollectiveError(
                        "rank \(rank): \(what): rank \(receive.from) sent \(message.count) bytes, \(receive.bytes.count) expected")
                }
                message.withUnsafeBytes { receive.bytes.copyMemory(from: $0) }
                return
            }
            if monotonicSeconds() > deadline {
                throw CollectiveError("rank \(rank): no message from rank \(receive.from) for \(Int(timeout)) s during \(what)")
            }
            usleep(50)
        }
    }

    public func abort(code: Int32) -> Never { exit(code) }
    public func finish() {}
    public var allowsOtherThreads: Bool { true }
    public var allOnOneNode: Bool? { true }
}

/// Monotonic seconds.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
