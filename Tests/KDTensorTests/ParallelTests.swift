import Dispatch
import Synchronization
import Testing

@testable import KDTensor

@Suite("Parallel work splitting")
struct ParallelTests {
    /// Every index of 0..<count lands in exactly one chunk, and each chunk is where the fixed
    /// partition puts it.
    static func covered(_ count: Int, parts: Int) -> Bool {
        let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        hits.initialize(repeating: 0)
        defer { hits.deallocate() }
        let out = UncheckedSendable(hits)
        let misplaced = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
        misplaced.initialize(repeating: 0)
        defer { misplaced.deallocate() }
        let wrong = UncheckedSendable(misplaced)
        Parallel.chunks(count, parts: parts) { i, range in
            if range != (count * i / parts)..<(count * (i + 1) / parts) { wrong.value[i] += 1 }
            for j in range { out.value[j] += 1 }
        }
        return hits.allSatisfy { $0 == 1 } && misplaced.allSatisfy { $0 == 0 }
    }

    @Test("a new pool's first job has its helper: a job published before the helper thread first runs is not missed")
    func firstJobHasItsHelper() {
        for _ in 0..<5 {
            let pool = WorkerPool()
            let started = Atomic<Int>(0)
            let overlapped = Atomic<Bool>(false)
            // Iteration 0 waits (up to 2 s) for iteration 1 to start: only a helper can run it
            // meanwhile; the caller alone would reach it after iteration 0 ends.
            let ran = pool.perform(2) { i in
                started.add(1, ordering: .acquiringAndReleasing)
                guard i == 0 else { return }
                let deadline = DispatchTime.now().uptimeNanoseconds + 2_000_000_000
                while started.load(ordering: .acquiring) < 2 && DispatchTime.now().uptimeNanoseconds < deadline {}
                overlapped.store(started.load(ordering: .acquiring) == 2, ordering: .releasing)
            }
            let both = overlapped.load(ordering: .acquiring)
            #expect(ran)
            #expect(both, "the helper missed the pool's first job")
        }
    }

    @Test("back-to-back jobs on the worker pool each cover their range once")
    func manyJobs() {
        for job in 0..<2000 { #expect(Self.covered(50 + job % 7, parts: 2 + job % 3)) }
    }

    @Test("a nested call (the pool busy) and calls from several threads at once still cover their ranges")
    func nestedAndConcurrent() {
        let results = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 8)
        results.initialize(repeating: false)
        defer { results.deallocate() }
        let out = UncheckedSendable(results)
        Parallel.chunks(8, parts: 2) { _, range in
            for i in range { out.value[i] = Self.covered(100 + i, parts: 2) }
        }
        #expect(results.allSatisfy { $0 })
        results.initialize(repeating: false)
        DispatchQueue.concurrentPerform(iterations: 8) { i in out.value[i] = Self.covered(300 + i, parts: 3) }
        #expect(results.allSatisfy { $0 })
    }

    @Test("cache sizes as sysfs writes them: K, M or bytes, within 16 KiB to 1 GiB")
    func cacheSizes() {
        #expect(CacheSizes.parseSize("1024K") == 1 << 20)
        #expect(CacheSizes.parseSize("2M") == 2 << 20)
        #expect(CacheSizes.parseSize("524288") == 512 << 10)
        #expect(CacheSizes.parseSize("8K") == nil)
        #expect(CacheSizes.parseSize("2G") == nil)
        #expect(CacheSizes.parseSize("99999999999999999K") == nil)
        #expect(CacheSizes.parseSize("") == nil)
        #expect(CacheSizes.parseSize("K") == nil)
        #expect(CacheSizes.parseSize("-1M") == nil)
        if let l2 = CacheSizes.l2 { #expect((16 << 10...1 << 30).contains(l2)) }
    }
}
