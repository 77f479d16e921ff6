/// The content digest (Spec §8): SHA-256 over graph, labels, preprocessing and the tensor table
/// with tensor bytes, in a canonical serialisation independent of layout and compression.
struct ContentDigest {
    private var sha = SHA256()

    init() { sha.update(Array("KDB-CONTENT-1\n".utf8)) }

    mutating func addSection(_ fourcc: String, _ payload: [UInt8]?) {
        var s = ByteSink()
        s.raw(fourcc.utf8)
        s.u8(payload == nil ? 0 : 1)
        if let payload { s.u64(UInt64(payload.count)) }
        sha.update(s.bytes)
        if let payload { sha.update(payload) }
    }

    mutating func beginTensors(count: Int) {
        var s = ByteSink()
        s.u64(UInt64(count))
        sha.update(s.bytes)
    }

    mutating func addTensor(_ t: TensorInfo, quant: Quantization.Params?, bytes: UnsafeRawBufferPointer) {
        var m: [String: Value] = [
            "dtype": .uint(UInt64(t.dtype.rawValue)), "name": .string(t.name), "shape": .ints(t.shape.map(Int64.init)),
        ]
        if let quant { m["quant"] = quant.value }
        let encoded = Value.map(m).encoded()
        var s = ByteSink()
        s.u64(UInt64(encoded.count))
        s.raw(encoded)
        s.u64(UInt64(bytes.count))
        sha.update(s.bytes)
        sha.update(bytes)
    }

    mutating func finish() -> String { sha.finalize().hexString }
}
