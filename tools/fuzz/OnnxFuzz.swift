// libFuzzer entry point for the ONNX importer: protobuf decoding, initializers, constant
// folding, node conversion and the shape proof of the imported graph. Built by tools/fuzz-parsers.
import KDIO
import KDInterop

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOnnx(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Caps.current.foldedElements = 1 << 22
    Caps.current.tensorElements = 1 << 24
    Caps.current.activationElements = 1 << 22
    // External data is looked up next to "fuzz/model.onnx": a folder that does not exist.
    _ = try? OnnxImporter.load(bytes: Array(UnsafeBufferPointer(start: data, count: size)), path: "/nonexistent-fuzz/model.onnx")
    return 0
}
