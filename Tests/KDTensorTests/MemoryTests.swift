import Testing

@testable import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Keeping freed memory in the heap")
struct MemoryTests {
    /// glibc marks a chunk it mapped on its own with bit 1 of the size word before the chunk
    /// (IS_MMAPPED); such a chunk goes back to the kernel when freed and comes back as fresh pages.
    static func isMapped(_ p: UnsafeMutableRawPointer) -> Bool {
        (p - MemoryLayout<Int>.size).load(as: Int.self) & 2 != 0
    }

    #if canImport(Glibc)
        @Test("after keepFreedMemory, a 32 MiB buffer (a training step's activation) comes from the heap, not its own mapping")
        func largeBuffersFromTheHeap() throws {
            #expect(keepFreedMemory())
            for _ in 0..<3 {
                let p = try #require(malloc(32 << 20))
                let mapped = Self.isMapped(p)
                free(p)
                #expect(!mapped)
            }
        }
    #endif
}

@Suite("Pooled buffers by size class")
struct SizeClassTests {
    @Test("sizes between 1 k floats and the per-thread limit round up to a power of two; others stay exact")
    func classes() {
        #expect(ThreadPool.sizeClass(1) == 1)
        #expect(ThreadPool.sizeClass(1024) == 1024)
        #expect(ThreadPool.sizeClass(1025) == 2048)
        #expect(ThreadPool.sizeClass(38_400) == 65_536)
        #expect(ThreadPool.sizeClass(57_600) == 65_536)
        #expect(ThreadPool.sizeClass(65_536) == 65_536)
        #expect(ThreadPool.sizeClass(ThreadPool.largestFloats) == ThreadPool.largestFloats)
        #expect(ThreadPool.sizeClass(ThreadPool.largestFloats + 1) == ThreadPool.largestFloats + 1)
    }

    @Test("inside withSizeClasses a larger tensor of the same class takes the buffer a smaller one just released; outside, sizes are exact")
    func reuseAcrossSizes() {
        Storage.withSizeClasses {
            let released: UnsafeMutablePointer<Float>
            do {
                let small = Tensor(uninitialized: [38_400])
                #expect(small.storage.allocated == 65_536)
                small.pointer.initialize(repeating: 1, count: small.count)
                released = small.pointer
            }
            let large = Tensor(shape: [57_600], repeating: 2)
            #expect(large.pointer == released)
            #expect(large.storage.allocated == 65_536)
            #expect(large.pointer[57_599] == 2 && large.pointer[0] == 2)
        }
        let exact = Tensor(uninitialized: [38_401])
        #expect(exact.storage.allocated == 38_401)
    }
}
