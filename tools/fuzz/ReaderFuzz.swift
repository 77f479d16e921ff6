// libFuzzer entry point for the bundle reader: everything a hostile file can reach — open,
// every section decoder with its cross-checks, verify, digests, rewriting and shape inference.
// Built by tools/fuzz-reader together with Sources/KDBundle.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let bundle = try? ModelBundle(bytes: bytes, name: "fuzz") else { return 0 }
    _ = try? bundle.verify()
    _ = try? bundle.contentDigest()
    for i in bundle.tensors.indices where bundle.tensors[i].length <= 1 << 20 {
        _ = try? bundle.floats(named: bundle.tensors[i].name)
    }
    if let contents = try? bundle.contents(), let again = try? BundleWriter.encode(contents) {
        // Whatever the reader accepts, the writer must reproduce and the reader accept again.
        guard (try? ModelBundle(bytes: again, name: "rewritten")) != nil else { fatalError("rewrite rejected") }
    }
    if let graph = try? bundle.graph() {
        let shapes = Dictionary(bundle.tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        _ = try? graph.stats(tensorShapes: shapes, batch: 2)
    }
    return 0
}
