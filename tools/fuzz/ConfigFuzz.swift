// libFuzzer entry point for the `--config` YAML loader (Sources/kdtool/Support/ConfigFile.swift,
// compiled with this file): size, alias expansion, depth and sweep limits. Built by tools/fuzz-parsers.
import KDIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? ConfigFile.parse(text, path: "fuzz.yaml")
    return 0
}
