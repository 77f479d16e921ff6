import CBLAS
import Dispatch
import Synchronization

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
            let part: (Int) -> Void = { i in body(i, (count * i / p)..<(count * (i + 1) / p)) }
            if WorkerPool.shared.perform(p, part) { return }
            // The pool is busy (a nested call, or another thread's work): Dispatch's threads.
            let work = UncheckedSendable(part)
            DispatchQueue.concurrentPerform(iterations: p) { work.value($0) }
        }
    }
}

/// Worker threads that stay awake briefly between jobs.
///
/// Inference of a small batch is a job of well under a millisecond, and a core woken from sleep
/// (as Dispatch's idle threads are) arrives a good part of that late: measured, LeNet-5 at batch
/// 64 ran no faster on two threads than on one. Here the helpers spin for a short while after
/// each job (as ONNX Runtime's and OpenMP's pools do) before they park on a condition variable,
/// so back-to-back jobs find them running. One job at a time; a call that finds the pool busy
/// returns false and its caller uses Dispatch.
@usableFromInline
final class WorkerPool: @unchecked Sendable {
    @usableFromInline static let shared = WorkerPool()

    /// How long an idle helper spins before it parks.
    static let spinNanoseconds: UInt64 = 5_000_000

    // The atomics lie a cache line or more apart (the padding between them; a class keeps its
    // stored properties in order). Side by side, the idle helper's loads of `generation` and the
    // caller's stores to the others passed one line back and forth between the cores on every
    // job, and the caller waited for the helper 2–3 µs of a 15 µs layer.
    private let busy = Atomic<Bool>(false)
    private let pad0 = CacheLinePad()
    private let generation = Atomic<Int>(0)
    private let pad1 = CacheLinePad()
    /// The job's generation, iteration count and next unclaimed iteration in one word
    /// (`generation << 32 | iterations << 16 | next`), so that a helper still finishing an old job
    /// can never claim an iteration of the next one: its compare-exchange fails instead.
    private let ticket = Atomic<Int>(0)
    private let pad2 = CacheLinePad()
    private let unfinished = Atomic<Int>(0)
    private let pad3 = CacheLinePad()
    /// Written before the ticket is published, read only after a successful claim.
    private var job: ((Int) -> Void)?
    private var helpers = 0
    /// Each helper's thread and the CPU it is pinned to.
    private var threads: [pthread_t] = []
    private var pinnedCPU: [Int] = []
    private var sleepers = 0
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()

    /// A pool of its own (tests); everything else uses `shared`.
    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
    }

    /// Runs `body(0..<iterations)` across the caller and the helpers; false (and nothing run)
    /// when the pool is already running a job.
    @usableFromInline
    func perform(_ iterations: Int, _ body: (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            precondition(iterations < 1 << 16)
            while helpers < iterations - 1 { startHelper() }
            keepHelpersOffCallersCPU(iterations - 1)
            job = body
            unfinished.store(iterations, ordering: .relaxed)
            let g = generation.load(ordering: .relaxed) &+ 1
            ticket.store((g & 0x7fff_ffff) << 32 | iterations << 16, ordering: .releasing)
            generation.store(g, ordering: .releasing)
            pthread_mutex_lock(&mutex)
            if sleepers > 0 { pthread_cond_broadcast(&wake) }
            pthread_mutex_unlock(&mutex)
            runIterations(generation: g)
            // Spin until the helpers are done.
            var wait = SpinWait()
            while unfinished.load(ordering: .acquiring) > 0 { wait.spin() }
            job = nil
        }
        return true
    }

    /// Takes iterations of job `generation` until none is left (or a later job has replaced it).
    private func runIterations(generation g: Int) {
        while true {
            let t = ticket.load(ordering: .acquiring)
            let (gen, count, next) = (t >> 32, (t >> 16) & 0xffff, t & 0xffff)
            guard gen == g & 0x7fff_ffff, next < count else { return }
            guard ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing).exchanged else { continue }
            job!(next)
            unfinished.subtract(1, ordering: .releasing)
        }
    }

    /// A helper pinned to the CPU the caller runs on would take turns with it there while another
    /// CPU idles, and the scheduler does not move a busy thread off a shared CPU for a long while
    /// (seen: a whole benchmark of LeNet-5 at batch 32, about 70 ms, ran on one core). Such a
    /// helper moves to a CPU that no other helper and not the caller uses.
    private func keepHelpersOffCallersCPU(_ count: Int) {
        #if os(Linux)
            let here = Int(currentCPU())
            guard here >= 0, let clash = pinnedCPU.prefix(count).firstIndex(of: here) else { return }
            let cpus = allowedCPUs()
            guard let free = cpus.first(where: { $0 != here && !pinnedCPU.prefix(count).contains($0) }) else { return }
            var mask = cpu_set_t()
            withUnsafeMutableBytes(of: &mask) { raw in raw[free / 8] |= UInt8(1 << (free % 8)) }
            if setThreadAffinity(threads[clash], MemoryLayout<cpu_set_t>.size, &mask) == 0 { pinnedCPU[clash] = free }
        #endif
    }

    private func startHelper() {
        helpers += 1
        let index = helpers
        let cpus = allowedCPUs()
        pinnedCPU.append(cpus.isEmpty ? -1 : cpus[index % cpus.count])
        // The generation as the thread is made: a job published before the thread first runs is
        // then still new to it (read in the thread, it was seen as done and the job went
        // without the helper, which for a job as long as a whole `infer` run was half the cores).
        let context = Unmanaged.passRetained(HelperStart(pool: self, index: index, seen: generation.load(ordering: .acquiring)))
            .toOpaque()
        var thread = pthread_t()
        let started = pthread_create(
            &thread, nil,
            { raw in
                let start = Unmanaged<HelperStart>.fromOpaque(raw!).takeRetainedValue()
                start.pool.helperLoop(index: start.index, seen: start.seen)
                return nil
            }, context)
        precondition(started == 0, "cannot start a worker thread (pthread_create: \(started))")
        pthread_detach(thread)
        threads.append(thread)
        // Helper i keeps to CPU i (of those this process may use). Left to itself the scheduler
        // wakes a parked helper on its caller's CPU and leaves it there, so that the two take
        // turns on one core while the other idles (seen: no gain at all from a second thread).
        #if os(Linux)
            if let cpu = pinnedCPU.last, cpu >= 0, cpus.count > 1 {
                var mask = cpu_set_t()
                withUnsafeMutableBytes(of: &mask) { raw in raw[cpu / 8] |= UInt8(1 << (cpu % 8)) }
                _ = setThreadAffinity(thread, MemoryLayout<cpu_set_t>.size, &mask)
            }
        #endif
    }

    private final class HelperStart {
        let pool: WorkerPool
        let index: Int
        let seen: Int
        init(pool: WorkerPool, index: Int, seen: Int) {
            self.pool = pool
            self.index = index
            self.seen = seen
        }
    }

    private func helperLoop(index: Int, seen first: Int) -> Never {
        var seen = first
        while true {
            var start = timespec()
            clock_gettime(CLOCK_MONOTONIC, &start)
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                guard spins & 255 == 0 else { continue }
                var now = timespec()
                clock_gettime(CLOCK_MONOTONIC, &now)
                let elapsed = UInt64(now.tv_sec - start.tv_sec) * 1_000_000_000 &+ UInt64(bitPattern: Int64(now.tv_nsec - start.tv_nsec))
                if elapsed > Self.spinNanoseconds {
                    pthread_mutex_lock(&mutex)
                    sleepers += 1
                    while generation.load(ordering: .acquiring) == seen { pthread_cond_wait(&wake, &mutex) }
                    sleepers -= 1
                    pthread_mutex_unlock(&mutex)
                }
            }
            seen = generation.load(ordering: .acquiring)
            runIterations(generation: seen)
        }
    }
}

/// 64 bytes that keep the stored properties on either side on different cache lines.
private struct CacheLinePad {
    let bytes: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
}

/// Hands out indices 0, 1, 2, … to whichever worker asks next (work of uneven cost: slices of a
/// batch, image files). An atomic, not a lock: a thread that sleeps on a contended lock is woken
/// on the waker's core, and two workers were seen to end up taking turns on one core.
public final class WorkCounter: Sendable {
    private let next = Atomic<Int>(0)
    public init() {}
    public func take() -> Int { next.add(1, ordering: .relaxed).oldValue }
}

/// Waiting for another thread by spinning, `spin()` once per check: the core is yielded only
/// after 50 µs of waiting (the other thread's core was taken away). A yield is a system call, and
/// yielding every thousand spins put the waiter in the kernel while the other thread finished.
public struct SpinWait {
    private var spins = 0
    private var since: timespec?

    public init() {}

    @inline(__always)
    public mutating func spin() {
        spins &+= 1
        guard spins & 1023 == 0 else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        guard let start = since else {
            since = now
            return
        }
        if (now.tv_sec - start.tv_sec) * 1_000_000_000 + (now.tv_nsec - start.tv_nsec) > 50_000 { sched_yield() }
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

/// The CPUs this process may run on.
private func allowedCPUs() -> [Int] {
    #if os(Linux)
        var allowed = cpu_set_t()
        guard getAffinity(0, MemoryLayout<cpu_set_t>.size, &allowed) == 0 else { return [] }
        return withUnsafeBytes(of: &allowed) { raw in
            (0..<(raw.count * 8)).filter { raw[$0 / 8] & (1 << ($0 % 8)) != 0 }
        }
    #else
        return []
    #endif
}

// glibc declares these only under _GNU_SOURCE, which the Glibc module does not set.
@_silgen_name("sched_getaffinity") private func getAffinity(_ pid: Int32, _ size: Int, _ mask: UnsafeMutablePointer<cpu_set_t>) -> Int32
@_silgen_name("pthread_setaffinity_np") private func setThreadAffinity(_ thread: pthread_t, _ size: Int, _ mask: UnsafePointer<cpu_set_t>)
    -> Int32
@_silgen_name("sched_getcpu") private func currentCPU() -> Int32

/// The cache sizes of the CPU this process runs on, as Linux reports them in sysfs.
public enum CacheSizes {
    /// The L2 cache of one core in bytes, or nil where sysfs does not say (another OS, a
    /// container without /sys): cpu0's level-2 data or unified cache.
    public static let l2: Int? = {
        #if os(Linux)
            for index in 0..<8 {
                let dir = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
                guard let level = firstLine(dir + "level") else { break }
                guard level == "2", let type = firstLine(dir + "type"), type != "Instruction",
                    let size = firstLine(dir + "size")
                else { continue }
                return parseSize(size)
            }
        #endif
        return nil
    }()

    /// A sysfs cache size: "1024K", "2M", or bytes; nil unless it is 16 KiB to 1 GiB.
    public static func parseSize(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = Substring(text)
        var unit = 1
        if let last = digits.last, let u = units[last] {
            unit = u
            digits = digits.dropLast()
        }
        guard digits.count <= 10, let n = Int(digits) else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: unit)
        return !overflow && (16 << 10...1 << 30).contains(bytes) ? bytes : nil
    }

    /// The first line of a small text file (a sysfs attribute), without its newline.
    private static func firstLine(_ path: String) -> String? {
        #if os(Linux)
            guard let f = fopen(path, "r") else { return nil }
            defer { fclose(f) }
            var buffer = [CChar](repeating: 0, count: 64)
            guard fgets(&buffer, Int32(buffer.count), f) != nil else { return nil }
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return line.hasSuffix("\n") ? String(line.dropLast()) : line
        #else
            return nil
        #endif
    }
}
