#if canImport(Glibc)
    import Glibc
#endif

/// A problem at an op boundary (the message names both shapes) or an unsupported kernel case.
/// KDTensor has no KDIO dependency, so kdtool categorises it itself (a precondition, exit 1).
public struct TensorError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case shape = "tensor.shape"
        case unsupported = "tensor.unsupported"
    }
    public var code: Code
    public var description: String
    public init(_ description: String, code: Code = .shape) {
        self.code = code
        self.description = description
    }
}

/// Float32 storage from a size-keyed pool: buffers released by one training step are reused by
/// the next, so steady-state training allocates nothing.
public final class Storage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let capacity: Int
    /// The floats the buffer really holds (`capacity` or more: its size class), under which it
    /// goes back to the pool.
    let allocated: Int

    init(capacity: Int) {
        self.capacity = capacity
        (pointer, allocated) = BufferPool.shared.take(capacity)
    }

    deinit { BufferPool.shared.give(pointer, allocated) }

    /// Runs `body` with this thread's small buffers taken by size class (`ThreadPool.sizeClass`):
    /// a request gets the most recently released buffer of its class, larger than asked for but
    /// still in this core's cache. An inference worker running its slices of a batch turns it on;
    /// training does not (one shufflenetv2 epoch was 3 % slower with it, docs/performance.md,
    /// twenty-first session).
    public static func withSizeClasses<T>(_ body: () throws -> T) rethrows -> T {
        let pool = ThreadPool.current
        let before = pool.sizeClasses
        pool.sizeClasses = true
        defer { pool.sizeClasses = before }
        return try body()
    }
}

/// Free lists of 64-byte-aligned buffers by size, bounded in total bytes.
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var pooledFloats = 0
    private let limitFloats = 512 << 20 / 4
    private var lock = pthread_mutex_t()

    init() { pthread_mutex_init(&lock, nil) }

    /// A buffer of at least `n` floats and the floats it holds: `n`, or its size class where the
    /// calling thread takes them (`Storage.withSizeClasses`). Every list holds buffers of its key's
    /// size exactly.
    func take(_ n: Int) -> (UnsafeMutablePointer<Float>, Int) {
        var n = n
        if n <= ThreadPool.largestFloats {
            let pool = ThreadPool.current
            if pool.sizeClasses { n = ThreadPool.sizeClass(n) }
            if let p = pool.take(n) { return (p, n) }
        }
        pthread_mutex_lock(&lock)
        // Popped in place: `var list = free[n]` then `free[n] = list` copied the list each time.
        if let p = free[n]?.popLast() {
            pooledFloats -= n
            pthread_mutex_unlock(&lock)
            return (p, n)
        }
        pthread_mutex_unlock(&lock)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(n, 1) * 4) == 0, let raw else { fatalError("out of memory allocating \(n) floats") }
        return (raw.bindMemory(to: Float.self, capacity: max(n, 1)), n)
    }

    /// `p`, holding exactly `n` floats, back to the calling thread's lists or the shared ones.
    func give(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n <= ThreadPool.largestFloats, ThreadPool.current.give(p, n) { return }
        pthread_mutex_lock(&lock)
        if pooledFloats + n <= limitFloats {
            free[n, default: []].append(p)
            pooledFloats += n
            pthread_mutex_unlock(&lock)
            return
        }
        pthread_mutex_unlock(&lock)
        Glibc.free(p)
    }

    /// Into the shared free lists only (a thread's pool handing its buffers back).
    func giveShared(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        pthread_mutex_lock(&lock)
        if pooledFloats + n <= limitFloats {
            free[n, default: []].append(p)
            pooledFloats += n
            pthread_mutex_unlock(&lock)
            return
        }
        pthread_mutex_unlock(&lock)
        Glibc.free(p)
    }

    /// Returns pooled memory to the system (between unrelated phases, e.g. after training): the
    /// shared lists and the calling thread's own.
    func drain() {
        ThreadPool.current.drain()
        pthread_mutex_lock(&lock)
        for (_, list) in free { for p in list { Glibc.free(p) } }
        free = [:]
        pooledFloats = 0
        pthread_mutex_unlock(&lock)
    }
}

/// Each thread's own free lists of small buffers, in front of the shared pool: a buffer released
/// by a thread goes back to that thread's next allocation while it is still in that core's
/// cache (an inference slice's activations are a few hundred KB each, and a buffer taken from
/// the shared pool had often last been written by the other core).
final class ThreadPool {
    /// Buffers up to 1 MiB (an L2 cache) are kept per thread, at most 8 MiB in all.
    static let largestFloats = 1 << 18
    static let limitFloats = 1 << 21
    /// Whether this thread's requests take size classes (`Storage.withSizeClasses`).
    var sizeClasses = false

    /// The floats a pooled buffer of `n` holds, and the key of its free list: between 1 k floats
    /// and `largestFloats`, the next power of two. Requests of nearby sizes then share a list, so a
    /// layer whose output is larger than any buffer freed so far in the image gets the one the
    /// layer before it just released, still in this core's cache, rather than one of its own size
    /// last written an image ago. mobilenetv2 ×1.0's first 96 → 576 expansion at batch 64 took
    /// 3.3–3.9 ms against 2.7–3.1 ms for the identical layer after it; with the classes both take
    /// 2.6–2.7 ms (AVX2 build, Zen 4; docs/performance.md, twenty-first session). Below 1 k floats
    /// sizes stay exact (a bias, a row of statistics); above `largestFloats` they go to the shared
    /// lists, exact too. Only where the thread asks (`Storage.withSizeClasses`).
    static func sizeClass(_ n: Int) -> Int {
        guard n > 1024, n <= largestFloats else { return n }
        return 1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)
    }

    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var floats = 0

    static var current: ThreadPool {
        if let p = pthread_getspecific(key) { return Unmanaged<ThreadPool>.fromOpaque(p).takeUnretainedValue() }
        let pool = ThreadPool()
        pthread_setspecific(key, Unmanaged.passRetained(pool).toOpaque())
        return pool
    }

    /// At thread exit the buffers move to the shared pool.
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { raw in
            guard let raw else { return }
            let pool = Unmanaged<ThreadPool>.fromOpaque(raw).takeRetainedValue()
            for (n, list) in pool.free { for p in list { BufferPool.shared.giveShared(p, n) } }
            pool.free = [:]
        }
        return k
    }()

    func take(_ n: Int) -> UnsafeMutablePointer<Float>? {
        // In place (a copy of the list taken out of the dictionary and put back was a heap
        // allocation per buffer).
        guard let p = free[n]?.popLast() else { return nil }
        floats -= n
        return p
    }

    func give(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        guard floats + n <= Self.limitFloats else { return false }
        free[n, default: []].append(p)
        floats += n
        return true
    }

    func drain() {
        for (n, list) in free { for p in list { BufferPool.shared.giveShared(p, n) } }
        free = [:]
        floats = 0
    }
}

/// A contiguous row-major (NCHW) Float32 tensor. Copies share storage; reshapes are free.
///
///     var t = Tensor(zeros: [2, 3])
///     t[0] = 1
public struct Tensor: @unchecked Sendable {
    public private(set) var shape: [Int]
    public let storage: Storage
    public let count: Int

    public init(uninitialized shape: [Int]) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.storage = Storage(capacity: count)
    }

    public init(zeros shape: [Int]) {
        self.init(uninitialized: shape)
        pointer.initialize(repeating: 0, count: count)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(uninitialized: shape)
        pointer.initialize(repeating: value, count: count)
    }

    public init(shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: count) }
    }

    public init(shape: [Int], bytes: UnsafeRawBufferPointer) {
        self.init(uninitialized: shape)
        precondition(bytes.count == count * 4)
        UnsafeMutableRawPointer(pointer).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    private init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
        self.count = shape.reduce(1, *)
    }

    @inlinable public var pointer: UnsafeMutablePointer<Float> { storage.pointer }
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }
    public var rank: Int { shape.count }

    /// The same storage seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count else {
            throw TensorError("cannot reshape \(shape) (\(count) elements) to \(newShape)")
        }
        return Tensor(shape: newShape, storage: storage)
    }

    public func copy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    /// A new tensor: every element times `factor`.
    public func scaled(by factor: Float) -> Tensor {
        let t = Tensor(uninitialized: shape)
        for i in 0..<count { t.pointer[i] = pointer[i] * factor }
        return t
    }

    /// Element `i` in row-major order; bounds-checked in debug builds (a `precondition` under
    /// SwiftPM's DEBUG define, since KDTensor's debug build is optimised and `assert` would vanish),
    /// unchecked in release builds.
    public subscript(i: Int) -> Float {
        get {
            #if DEBUG
                precondition(i >= 0 && i < count, "Tensor index \(i) outside 0..<\(count) of \(shape)")
            #endif
            return pointer[i]
        }
        nonmutating set {
            #if DEBUG
                precondition(i >= 0 && i < count, "Tensor index \(i) outside 0..<\(count) of \(shape)")
            #endif
            pointer[i] = newValue
        }
    }

    public func fill(_ v: Float) { pointer.update(repeating: v, count: count) }

    /// Little-endian bytes, for bundles.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count * 4) { buf, n in
            UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: pointer, byteCount: count * 4)
            n = count * 4
        }
    }
}

/// Releases pooled buffers back to the system.
public func releasePooledMemory() { BufferPool.shared.drain() }

/// Keeps the memory that a step frees inside the process for the next step (glibc's allocator),
/// for long jobs such as training that free and take the same large buffers every step.
///
/// The buffer pool keeps at most 512 MiB; a training step of a mobile student at batch 128 frees
/// more than that (peak RSS 1.5 GB for shufflenetv2 ×1.0), and glibc gave each buffer over its
/// mmap threshold back to the kernel, which cleared fresh pages for it on the next step (a minor
/// page fault per 4 KiB: 4.4 % of an epoch's samples in clearing pages and taking the faults).
/// With no mmap'd chunks, no trimming of the heap's top below 2 GiB and 64 MiB of padding per heap
/// extension, freed buffers stay in the heap and come back from it: an epoch of shufflenetv2 ×1.0
/// went from 214 to 224 img/s (medians of twelve alternated epochs, AVX2 build;
/// docs/performance.md, eighteenth session). Peak RSS does not change: the same buffers are live
/// at a step's peak. The bits computed do not depend on it. A no-op where the C library has no
/// `mallopt`; returns whether the settings were made.
@discardableResult
public func keepFreedMemory() -> Bool {
    #if canImport(Glibc)
        // Swift's Glibc module leaves out <malloc.h>: mallopt is looked up, with its parameters'
        // values from that header (M_TRIM_THRESHOLD −1, M_TOP_PAD −2, M_MMAP_MAX −4).
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        // mallopt returns 1 on success.
        return mallopt(-4, 0) == 1 && mallopt(-1, Int32.max) == 1 && mallopt(-2, 64 << 20) == 1
    #else
        return false
    #endif
}
