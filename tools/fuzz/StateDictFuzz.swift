// libFuzzer entry point for the state-dict readers: safetensors (JSON header, offsets), npz (zip,
// zip64, deflate) and the .npy arrays inside, and .npy on its own. Built by tools/fuzz-parsers.
import KDIO
import KDInterop

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStateDict(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Caps.current.tensorElements = 1 << 24
    Caps.current.expandedBytes = 1 << 26
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? StateDict.read(bytes: bytes, path: "fuzz")
    _ = try? Npy.read(bytes, path: "fuzz.npy")
    return 0
}
