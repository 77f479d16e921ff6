import Foundation
import KDBundle
import KDDistill
import KDNN
import KDQuant
import KDTensor
import Testing

@testable import KDInterop

enum Fixture {
    static func path(_ name: String) -> String { Bundle.module.path(forResource: name, ofType: nil, inDirectory: "Fixtures")! }
    static func npy(_ name: String) throws -> Tensor {
        let a = try Npy.read(path: path(name))
        return Tensor(shape: a.shape, values: a.floats)
    }
    static func temp(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-interop-\(UUID().uuidString.prefix(8))-\(name)").path
    }
    /// Python with onnx + onnxruntime (the venv tools/setup creates), if there is one.
    static let python: String? = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let candidates: [String?] = [
            ProcessInfo.processInfo.environment["KDTOOL_ONNX_PYTHON"], root.appendingPathComponent(".build/venv-onnx/bin/python").path,
        ]
        for case let p? in candidates where FileManager.default.isExecutableFile(atPath: p) { return p }
        return nil
    }()
    static let checkScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("tools/check_onnx.py").path
}

func maxAbs(_ a: Tensor, _ b: Tensor) -> Float {
    var m: Float = 0
    for i in 0..<min(a.count, b.count) { m = max(m, abs(a[i] - b[i])) }
    return m
}

@Suite("ONNX import")
struct OnnxImportTests {
    @Test(
        "exporter-shaped graphs (BatchNorm, residual Sum/Add, Concat, Shape→Reshape, MatMul+Add, Mul/Add scale-shift, external data) match ONNX Runtime",
        arguments: ["resnet_like", "inception_like", "lenet_external"])
    func matchesRuntime(name: String) throws {
        let (model, notes) = try OnnxImporter.load(path: Fixture.path(name + ".onnx"))
        let x = try Fixture.npy(name + ".input.npy")
        let want = try Fixture.npy(name + ".output.npy")
        let plan = try InferencePlan(model)
        // inception_like ends in Softmax: the importer made it the output kind.
        let y = notes.strippedOutputActivation != nil ? try plan.probabilities(x) : try plan.run(x)
        #expect(y.shape == want.shape)
        var scale: Float = 1e-6
        for i in 0..<want.count { scale = max(scale, abs(want[i])) }
        #expect(maxAbs(y, want) <= 1e-4 * scale, "\(name): max error \(maxAbs(y, want)) at scale \(scale)")
        #expect(try maxAbs(model.predict(x), plan.run(x)) <= 1e-4 * max(scale, 1), "unfused and fused forward agree")
        if name == "resnet_like" {
            #expect(notes.folded >= 5, "Shape/Gather/Unsqueeze/Concat/Constant folded")
            #expect(model.graph.nodes.contains { $0.op == .reshape && $0.ints("shape") == [0, -1] })
            #expect(model.graph.nodes.filter { $0.op == .add }.count == 2)
        }
        if name == "inception_like" {
            #expect(notes.strippedOutputActivation == "softmax" && model.graph.outputKind == .softmax)
            #expect(
                model.graph.nodes.contains { $0.op == .mul } && model.graph.nodes.contains { $0.op == .add },
                "Mul then Add by per-channel constants became broadcasting mul and add of stored tensors")
            #expect(model.graph.nodes.contains { $0.op == .linear && $0.inputs.count == 3 }, "MatMul + Add became one linear with a bias")
        }
    }

    @Test("every unsupported node is listed in one error")
    func unsupported() {
        do {
            _ = try OnnxImporter.load(path: Fixture.path("unsupported.onnx"))
            Issue.record("imported a model with Softplus and Softsign")
        } catch {
            let m = "\(error)"
            #expect(
                m.contains("2 nodes cannot be imported") && m.contains("softplus (Softplus)") && m.contains("softsign (Softsign)"), "\(m)")
        }
    }

    @Test("bad files: not protobuf, external data leaving the folder")
    func badFiles() throws {
        let junk = Fixture.temp("junk.onnx")
        try writeFileBytes(Array("this is not a model".utf8) + [0xff, 0xff, 0xff], to: junk)
        #expect(throws: InteropError.self) { try OnnxImporter.load(path: junk) }
        var m = Onnx_ModelProto()
        var op = Onnx_OperatorSetIdProto()
        op.version = 13
        m.opsetImport = [op]
        var t = Onnx_TensorProto()
        t.name = "w"
        t.dataType = 1
        t.dims = [2, 2]
        t.dataLocation = .external
        var loc = Onnx_StringStringEntryProto()
        loc.key = "location"
        loc.value = "../../etc/passwd"
        t.externalData = [loc]
        m.graph.initializer = [t]
        var input = Onnx_ValueInfoProto()
        input.name = "x"
        input.type = OnnxExporter.tensorType([-1, 2], dynamic: true)
        m.graph.input = [input]
        let escape = Fixture.temp("escape.onnx")
        try writeFileBytes([UInt8](try m.serializedBytes() as Data), to: escape)
        do {
            _ = try OnnxImporter.load(path: escape)
            Issue.record("followed an external data path out of the model's folder")
        } catch {
            #expect("\(error)".contains("leaves the model's folder"), "\(error)")
        }
    }
}

@Suite("ONNX export")
struct OnnxExportTests {
    /// The zoo at small widths, plus a KC student with every SC head (split_linear, l2norm_scale).
    static func zoo() throws -> [(String, Model)] {
        var out: [(String, Model)] = []
        for (name, input) in [
            ("mlp", [1, 8, 8]), ("lenet5", [1, 28, 28]), ("resnet8", [3, 16, 16]), ("resnet8-a", [1, 12, 12]),
            ("fitnet-thin", [1, 16, 16]),
        ] {
            var a = try Architecture(name: name == "resnet8-a" ? "resnet8" : name)
            if name == "resnet8-a" { a.shortcut = .a }
            a.hidden = [32, 16]
            a.width = 0.5
            let m = try a.build(input: input, classes: 10, seed: 5)
            // Non-trivial batch-norm statistics, so folding and export are exercised.
            for (k, t) in m.buffers { for i in 0..<t.count { t[i] = k.hasSuffix("var") ? 1 + Float(i % 5) * 0.1 : Float(i % 7) * 0.05 } }
            out.append((name, m))
        }
        let verticals = VerticalMap([
            .init(name: "a", classes: [0, 3, 6, 8]), .init(name: "b", classes: [1, 4, 7, 9]), .init(name: "c", classes: [2, 5]),
        ])
        for head in [KC.Head.fc, .fcSC, .scSC, .fcSCShared] {
            var a = try Architecture(name: "mlp")
            a.hidden = [24]
            let base = try a.build(input: [1, 8, 8], classes: 10, seed: 6)
            out.append(
                (
                    "kc-\(head.rawValue)",
                    try KC.attachHead(to: base, head: head, verticals: verticals, width: 12, shared: 4, selfPaced: .vertical, seed: 7)
                ))
        }
        return out
    }

    @Test("import(export(x)) gives the same graph and tensors, for every architecture and KC head")
    func roundTrip() throws {
        for (name, m) in try Self.zoo() {
            m.labels = Labels((0..<10).map { "c\($0)" })
            let path = Fixture.temp("\(name).onnx")
            try writeFileBytes(try OnnxExporter.export(m), to: path)
            let (back, _) = try OnnxImporter.load(path: path)
            #expect(back.graph == m.graph, "\(name): graph differs")
            #expect(back.labels == m.labels)
            for n in m.tensorNames {
                let a = (m.parameters[n] ?? m.buffers[n])!
                let b = (back.parameters[n] ?? back.buffers[n])
                #expect(b != nil && b!.shape == a.shape && maxAbs(a, b!) == 0, "\(name): tensor \(n)")
            }
        }
    }

    @Test("exports pass onnx.checker and match ONNX Runtime (every architecture, KC heads, quantized)", .enabled(if: Fixture.python != nil))
    func runtime() throws {
        var args: [String] = []
        var quantArgs: [String] = []
        for (name, m) in try Self.zoo() {
            let shape = [3] + m.inputShape.dropFirst()
            let x = Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { Float(($0 * 7919) % 211) / 105 - 1 })
            let onnx = Fixture.temp("\(name).onnx")
            try writeFileBytes(try OnnxExporter.export(m, options: .init(opset: name == "lenet5" ? 13 : 17, dynamicBatch: true)), to: onnx)
            let xp = Fixture.temp("\(name).x.npy")
            let yp = Fixture.temp("\(name).y.npy")
            try Npy.write(xp, shape: x.shape, floats: (0..<x.count).map { x[$0] })
            let y = try InferencePlan(m).run(x)
            try Npy.write(yp, shape: y.shape, floats: (0..<y.count).map { y[$0] })
            args += [onnx, xp, yp]
            if name == "lenet5" {
                var cal = Calibrator(names: m.quantizableActivations, percentile: false)
                try cal.observe(m, batch: x)
                let qb = try QuantizedBundle(model: m, scheme: .int8PerChannel, activations: cal.ranges(percentile: nil))
                let bundle = try ModelBundle(bytes: try BundleWriter.encode(qb.contents))
                let qm = try Model(bundle: bundle)
                let qonnx = Fixture.temp("q.onnx")
                try writeFileBytes(try OnnxExporter.export(qm, bundle: bundle, options: .init(dynamicBatch: true)), to: qonnx)
                let qy = Fixture.temp("q.y.npy")
                let out = try InferencePlan(qm).run(x)
                try Npy.write(qy, shape: out.shape, floats: (0..<out.count).map { out[$0] })
                quantArgs = [qonnx, xp, qy]
            }
        }
        let r = try runPython([Fixture.checkScript] + args)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(r.out.split(separator: "\n").count == args.count / 3)
        // The quantized graph, its QuantizeLinear/DequantizeLinear run as written: ONNX Runtime computes conv then batch
        // norm where kdtool folds them, so a value within 1e-6 of a grid boundary can round one u8 step apart; the
        // tolerance is 5 % of the output scale, still far below what a wrong scale or zero point produces.
        let q = try runPython([Fixture.checkScript, "--no-optimize", "--rtol", "5e-2"] + quantArgs)
        #expect(q.status == 0, "\(q.out)\(q.err)")
    }

    func runPython(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Fixture.python!)
        p.arguments = args
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}
