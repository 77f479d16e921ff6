import Foundation
import KDInterop
import KDNN
import KDTensor
import Testing

/// Narrow versions of torchvision's mobilenet_v2, mobilenet_v3_small, efficientnet_b0,
/// shufflenet_v2, regnet_y and convnext (tools/export_torchvision.py --tiny), written by PyTorch
/// 2.13's TorchScript exporter (opset 13, dynamic batch) and its dynamo exporter (opset 18), with
/// ONNX Runtime's output on a saved input of two images.
@Suite("Importing what PyTorch's exporters write (torchvision architectures)")
struct TorchvisionTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/torchvision")
    static let models: [String] =
        (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?
        .filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }.sorted() ?? []

    static func close(_ a: Tensor, _ b: Tensor, _ tol: Float) -> Bool {
        let scale = max(b.array.map(abs).max() ?? 1, 1e-6)
        return a.count == b.count && zip(a.array, b.array).allSatisfy { abs($0 - $1) <= tol * scale }
    }

    @Test("the fixtures are all there") func present() {
        #expect(Self.models.count == 11, "\(Self.models)")
    }

    @Test(
        "import matches ONNX Runtime within 1e-4 of the output's scale, on the tape and the inference plan, and export → import keeps the function",
        arguments: models)
    func importRunExport(stem: String) throws {
        let path = Self.folder.appendingPathComponent(stem + ".onnx").path
        let (model, notes) = try OnnxImporter.load(path: path)
        func npy(_ suffix: String) throws -> Tensor {
            let a = try Npy.read(path: Self.folder.appendingPathComponent(stem + suffix).path)
            return Tensor(shape: a.shape, values: a.floats)
        }
        let (x, want) = (try npy(".input.npy"), try npy(".output.npy"))
        let y = try model.predict(x)
        #expect(y.shape == [2, 10], "10 classes from the output's non-unit dimension: \(y.shape)")
        #expect(Self.close(y, want, 1e-4), "\(stem): the tape's output differs from ONNX Runtime's")
        let plan = try InferencePlan(model).run(x)
        #expect(Self.close(plan, want, 1e-4), "\(stem): the inference plan's output differs from ONNX Runtime's")
        #expect(notes.opset >= 13)
        let bytes = try OnnxExporter.export(model, options: .init(opset: 17))
        let (back, _) = try OnnxImporter.load(bytes: bytes, path: stem + ".kdtool.onnx")
        #expect(Self.close(try back.predict(x), y, 1e-5), "\(stem): export → import changed the function")
        // Every imported op has a backward: one training step's gradient reaches the first layer.
        let tape = Tape()
        var rng = RandomSource(seed: 1)
        let f = try model.forward(x, training: true, tape: tape, rng: &rng)
        try tape.backward([(f.output, Tensor(shape: tape.shape(f.output), repeating: 1))])
        let first = try #require(model.order.first { $0.op == .conv2d })
        let w = try #require(f.parameter(first.inputs[1]))
        let g = try #require(tape.grad(w))
        #expect(g.array.contains { $0 != 0 } && g.array.allSatisfy(\.isFinite), "\(stem): no gradient at \(first.name)")
        let bad = model.parameters.keys.sorted().filter { name in
            f.parameter(name).flatMap { tape.grad($0) }.map { !$0.array.allSatisfy(\.isFinite) } ?? false
        }
        #expect(bad.isEmpty, "\(stem): non-finite gradients for \(bad.prefix(6))")
    }
}
