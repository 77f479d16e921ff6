import Foundation
import KDBundle
import KDInterop
import KDNN
import KDTensor
import Testing

/// The mobile zoo against torchvision's own builds (tools/zoo_reference.py): parameter counts and
/// convolution + linear FLOPs for every architecture at ImageNet size (width 1, 1000 classes) and
/// at CIFAR size (width 0.5, 10 classes), and seeded torchvision state dicts that load with no name
/// map and give torchvision's outputs.
@Suite("Mobile zoo: torchvision's names, counts and outputs")
struct ZooTorchvisionTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/zoo")

    struct Entry: Decodable, Sendable {
        let params: Int
        let flops: Int
        let width: Double
        let size: Int
        let classes: Int
        let stem: String
    }

    static let manifest: [String: Entry] = {
        guard let data = try? Data(contentsOf: folder.appendingPathComponent("manifest.json")) else { return [:] }
        return (try? JSONDecoder().decode([String: Entry].self, from: data)) ?? [:]
    }()

    static func build(_ key: String, _ e: Entry) throws -> Model {
        var a = try Architecture(name: String(key.split(separator: "@")[0]))
        a.width = e.width
        return try a.build(input: [3, e.size, e.size], classes: e.classes, seed: 0)
    }

    @Test("every architecture is checked at both sizes") func complete() {
        let mobile = Architecture.Kind.allCases.filter(\.isMobile).map(\.rawValue)
        #expect(mobile.count == 7)
        for arch in mobile {
            #expect(
                Self.manifest["\(arch)@1.0x224c1000"] != nil && Self.manifest["\(arch)@\(arch == "resnet18" ? "1.0" : "0.5")x32c10"] != nil,
                "\(arch)")
        }
    }

    @Test("parameter and FLOP counts equal torchvision's", arguments: manifest.keys.sorted())
    func counts(key: String) throws {
        let e = Self.manifest[key]!
        let m = try Self.build(key, e)
        #expect(m.parameterCount == e.params, "\(key): \(m.parameterCount) parameters, torchvision \(e.params)")
        let stats = try m.graph.stats(tensorShapes: m.tensorShapes, batch: 1)
        let flops = stats.filter { $0.node.op == .conv2d || $0.node.op == .linear }.reduce(0) { $0 + $1.flops }
        #expect(flops == e.flops, "\(key): \(flops) convolution and linear FLOPs, torchvision \(e.flops)")
        let shape = try #require(stats.last?.outputShape)
        #expect(shape == [1, e.classes])
        let a = try Architecture(name: String(key.split(separator: "@")[0]))
        #expect(a.resolvedStem(input: [3, e.size, e.size]).rawValue == e.stem)
        #expect(m.fspPairs.map { !$0.pairs.isEmpty } == true && m.hints.map { !$0.hints.isEmpty } == true, "\(key): FSP pairs and hints")
    }

    @Test(
        "a torchvision state dict loads with no name map and gives torchvision's output, on the tape and the inference plan",
        arguments: manifest.keys.filter { !$0.contains("@") }.sorted())
    func stateDict(arch: String) throws {
        let e = Self.manifest[arch]!
        let m = try Self.build(arch, e)
        let dict = try StateDict.read(path: Self.folder.appendingPathComponent(arch + ".npz").path)
        let unused = try dict.load(into: m)
        #expect(unused.isEmpty, "\(arch): unused \(unused.prefix(5))")
        func npy(_ suffix: String) throws -> Tensor {
            let a = try Npy.read(path: Self.folder.appendingPathComponent(arch + suffix).path)
            return Tensor(shape: a.shape, values: a.floats)
        }
        let (x, want) = (try npy(".input.npy"), try npy(".output.npy"))
        let scale = max(want.array.map(abs).max() ?? 1, 1e-6)
        for (label, y) in [("tape", try m.predict(x)), ("plan", try InferencePlan(m).run(x))] {
            let worst = zip(y.array, want.array).map { abs($0 - $1) }.max() ?? .infinity
            #expect(y.shape == want.shape && worst <= 1e-4 * scale, "\(arch) \(label): max error \(worst) at scale \(scale)")
        }
        // A training step reaches every trainable parameter with a finite gradient.
        let tape = Tape()
        var rng = RandomSource(seed: 1)
        let f = try m.forward(x, training: true, tape: tape, rng: &rng, fusing: [])
        try tape.backward([(f.output, Tensor(shape: tape.shape(f.output), repeating: 1))])
        let missing = m.trainableNames.filter { name in
            guard let g = f.parameter(name).flatMap({ tape.grad($0) }) else { return true }
            return !g.array.allSatisfy(\.isFinite)
        }
        #expect(missing.isEmpty, "\(arch): no finite gradient for \(missing.prefix(5))")
    }

    @Test("the stem follows the input size unless set; shufflenetv2 refuses widths torchvision lacks")
    func stems() throws {
        var a = try Architecture(name: "mobilenetv2")
        #expect(a.resolvedStem(input: [3, 64, 64]) == .cifar && a.resolvedStem(input: [3, 65, 65]) == .imagenet)
        a.stem = .imagenet
        #expect(try a.build(input: [3, 32, 32], classes: 10, seed: 0).graph.nodes[0].ints("stride") == [2, 2])
        a.stem = nil
        #expect(try a.build(input: [3, 32, 32], classes: 10, seed: 0).graph.nodes[0].ints("stride") == [1, 1])
        var s = try Architecture(name: "shufflenetv2")
        s.width = 0.75
        #expect(throws: NNError.self) { try s.build(input: [3, 32, 32], classes: 10, seed: 0) }
        #expect(Architecture.makeDivisible(32 * 0.35) == 16 && Architecture.makeDivisible(1280 * 0.5) == 640)
    }
}
