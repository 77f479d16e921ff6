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
