import Foundation
import Testing

@testable import KDBundle

/// Paths inside the repository, found from this file's location.
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("Spec/fixtures")

    static func fixtureFiles(_ kind: String) -> [URL] {
        let dir = fixtures.appendingPathComponent(kind)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".kdb") }.sorted().map { dir.appendingPathComponent($0) }
    }
}

/// A fresh temporary directory per test.
func temporaryDirectory(_ tag: String = #function) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
        "kdtool-tests-\(tag.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Opens, validates and verifies: everything a reader can check.
func fullyCheck(_ path: String, mmap: Bool = true) throws {
    let b = try ModelBundle(path: path, mmap: mmap)
    try b.verify()
}

/// A bundle with every section, several dtypes and a real graph, built in Swift.
func sampleContents(seed: UInt64 = 1, deflate: Set<String> = []) -> BundleContents {
    var rng = SplitMix(seed: seed)
    func floats(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextDouble() * 2 - 1) } }
    var c = BundleContents()
    c.tensors = [
        .init(name: "fc1.weight", shape: [16, 64], floats: floats(16 * 64)),
        .init(name: "fc1.bias", shape: [16], floats: floats(16)),
        .init(name: "fc2.weight", shape: [10, 16], floats: floats(160)),
        .init(name: "fc2.bias", shape: [10], floats: floats(10)),
        .init(name: "q.weight", dtype: .i8, shape: [3, 4], bytes: (0..<12).map { UInt8(truncatingIfNeeded: $0 * 37) }, quant: 0),
        .init(
            name: "half", dtype: .f16, shape: [5],
            bytes: (0..<5).flatMap { i -> [UInt8] in
                let h = TensorConversion.floatToHalf(Float(i) * 0.5 - 1)
                return [UInt8(h & 0xff), UInt8(h >> 8)]
            }),
        .init(name: "empty", dtype: .f32, shape: [0, 3], bytes: []),
    ]
    c.graph = Graph(
        inputs: [.init(name: "x", shape: [-1, 64])], outputs: ["logits"], outputKind: .softmax,
        nodes: [
            .init(name: "fc1", op: .linear, inputs: ["x", "fc1.weight", "fc1.bias"], outputs: ["h1"]),
            .init(name: "relu1", op: .relu, inputs: ["h1"], outputs: ["a1"]),
            .init(name: "fc2", op: .linear, inputs: ["a1", "fc2.weight", "fc2.bias"], outputs: ["logits"]),
        ])
    c.labels = Labels((0..<10).map { "class\($0)" })
    c.preprocessing = Preprocessing(channels: 1, height: 8, width: 8, scale: 1.0 / 16)
    c.verticals = VerticalMap([.init(name: "low", classes: [0, 1, 2]), .init(name: "high", classes: [7, 8, 9])])
    c.fspPairs = FSPPairs([.init("fc1", "relu1")])
    c.hints = Hints(hints: ["relu1"], guided: ["fc1"])
    c.quantization = Quantization([.init(axis: 0, scale: [0.1, 0.2, 0.3], zeroPoint: [0, 1, -1])])
    c.provenance = Provenance(
        method: "train", parents: [.init(role: "teacher", digest: String(repeating: "ab", count: 32))],
        hyperparameters: ["lr": .float(0.05), "epochs": .uint(3)], data: ["source": .string("digits")], seed: Int64(seed),
        metrics: ["accuracy": .float(0.9)])
    c.metadata = Metadata(["note": .string("sample"), "list": .array([.int(-1), .bool(true)])])
    c.deflate = deflate
    return c
}

/// A tiny deterministic generator for test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
