import Testing

@testable import KDTensor

@Suite("OpenBLAS kernel choice")
struct BLASCoreTests {
    static let avx512: Set<String> = ["fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]

    @Test func fallbackOnAnAVX512MachineAsksForTheAVX512Kernels() {
        #expect(BLASCore.better(than: "Prescott", cpuFlags: Self.avx512) == "SkylakeX")
        #expect(BLASCore.better(than: "Prescott", cpuFlags: Self.avx512.union(["avx512_bf16"])) == "Cooperlake")
        #expect(BLASCore.better(than: "Nehalem", cpuFlags: ["avx", "avx2", "fma"]) == "Haswell")
    }

    @Test func aRecognisedCPUOrAnOldOneIsLeftAlone() {
        #expect(BLASCore.better(than: "SkylakeX", cpuFlags: Self.avx512) == nil)
        #expect(BLASCore.better(than: "Cooperlake", cpuFlags: Self.avx512.union(["avx512_bf16"])) == nil)
        #expect(BLASCore.better(than: "Haswell", cpuFlags: ["avx", "avx2", "fma"]) == nil)
        #expect(BLASCore.better(than: "Prescott", cpuFlags: ["sse2", "sse3"]) == nil)
    }

    /// Debian's OpenBLAS 0.3.21 on an AMD Zen 5 (AVX-512 with full-width units) picks Haswell.
    @Test func aHaswellGuessOnAnAVX512MachineAsksForTheAVX512Kernels() {
        #expect(BLASCore.better(than: "Haswell", cpuFlags: Self.avx512) == "SkylakeX")
        #expect(BLASCore.better(than: "Zen", cpuFlags: Self.avx512.union(["avx512_bf16"])) == "Cooperlake")
    }

    @Test func theLoadedLibraryNamesItsKernels() {
        #expect(!BLASCore.name.isEmpty && BLASCore.name != "unknown")
    }
}
