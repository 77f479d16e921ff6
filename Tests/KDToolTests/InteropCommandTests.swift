import Foundation
import Testing

@Suite("kdtool import, export, run", .serialized)
struct InteropCommandTests {
    static let fixtures = CLI.root.path + "/Tests/KDInteropTests/Fixtures"

    func temp() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-interop-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test("import an ONNX model, run it on .npy, export it and import it back to the same content digest")
    func onnxRoundTrip() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let i = try CLI.run(["import", "\(Self.fixtures)/resnet_like.onnx", "--labels", "a,b,c,d,e,f,g,h,i,j", "-o", p("m.kdb")])
        #expect(i.status == 0, "\(i.err)")
        let r = try CLI.run(["run", p("m.kdb"), "--input", "\(Self.fixtures)/resnet_like.input.npy", "-o", p("y.npy")])
        #expect(r.status == 0 && r.out.contains("[3, 10]"), "\(r.out)\(r.err)")
        let y = try Data(contentsOf: URL(fileURLWithPath: p("y.npy")))
        let want = try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/resnet_like.output.npy"))
        #expect(y.count == want.count, "same header and element count as numpy's")
        let e = try CLI.run(["export", p("m.kdb"), "-o", p("m.onnx")])
        #expect(e.status == 0, "\(e.err)")
        let back = try CLI.run(["import", p("m.onnx"), "-o", p("back.kdb")])
        #expect(back.status == 0, "\(back.err)")
        let a = try CLI.run(["inspect", p("m.kdb"), "--json"])
        let b = try CLI.run(["inspect", p("back.kdb"), "--json"])
        func tensors(_ s: String) throws -> [String] {
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])
            return ((doc["tensors"] as? [[String: Any]]) ?? []).compactMap { t in (t["name"] as? String).map { "\($0) \(t["shape"] ?? "")" }
            }
        }
        #expect(try tensors(a.out) == tensors(b.out))
        let f = try CLI.run(["run", p("m.kdb"), "--input", "\(Self.fixtures)/resnet_like.input.npy", "--output", "l1o", "-o", p("f.npy")])
        #expect(f.status == 0 && f.out.contains("[3, 8, 16, 16]"), "\(f.out)\(f.err)")
    }

    @Test("bad input: an unsupported ONNX op, a .npy of the wrong shape or dtype, a state dict without --arch")
    func errors() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let u = try CLI.run(["import", "\(Self.fixtures)/unsupported.onnx", "-o", p("u.kdb")])
        #expect(u.status == 2 && u.err.contains("Softplus") && u.err.contains("Softsign"), "\(u.err)")
        #expect(!FileManager.default.fileExists(atPath: p("u.kdb")))
        _ = try CLI.run(["import", "\(Self.fixtures)/lenet_external.onnx", "-o", p("l.kdb")])
        let shape = try CLI.run(["run", p("l.kdb"), "--input", "\(Self.fixtures)/resnet_like.input.npy", "-o", p("y.npy")])
        #expect(shape.status == 2 && shape.err.contains("does not fit the model input"), "\(shape.err)")
        try Data([0x93] + Array("NUMPY".utf8) + [1, 0, 10, 0] + Array("{'descr'".utf8)).write(to: URL(fileURLWithPath: p("t.npy")))
        let trunc = try CLI.run(["run", p("l.kdb"), "--input", p("t.npy"), "-o", p("y.npy")])
        #expect(trunc.status == 2 && trunc.err.contains("t.npy"), "\(trunc.err)")
        let sd = try CLI.run(["import", "\(Self.fixtures)/resnet8_state.npz", "-o", p("s.kdb")])
        #expect(sd.status == 64 && sd.err.contains("--arch"), "\(sd.err)")
    }

    @Test("state dicts: import into resnet8 from npz and safetensors; export weights as safetensors and npz")
    func stateDicts() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        var digests: [String] = []
        for f in ["resnet8_state.npz", "resnet8_state.safetensors"] {
            let r = try CLI.run([
                "import", "\(Self.fixtures)/\(f)", "--arch", "resnet8", "--classes", "10", "--input", "1x28x28", "-o", p(f + ".kdb"),
            ])
            #expect(r.status == 0, "\(r.err)")
            digests.append(r.out.split(separator: "\n").last.map(String.init) ?? "")
        }
        #expect(digests[0] == digests[1] && digests[0].hasPrefix("content digest"))
        for ext in ["safetensors", "npz"] {
            let e = try CLI.run(["export", p("resnet8_state.npz.kdb"), "-o", p("w.\(ext)")])
            #expect(e.status == 0 && e.out.contains("tensors"), "\(e.err)")
            let back = try CLI.run([
                "import", p("w.\(ext)"), "--arch", "resnet8", "--classes", "10", "--input", "1x28x28", "-o", p("w-\(ext).kdb"),
            ])
            #expect(back.status == 0 && back.out.contains(digests[0]), "\(ext): \(back.out)\(back.err)")
        }
    }
}

@Suite("import → export computes the original function", .serialized)
struct ImportExportFunctionTests {
    static let python = CLI.root.path + "/.build/venv-onnx/bin/python"

    @Test(
        "a SqueezeNet-shaped classifier ([N, K, 1, 1] then Softmax): K classes; export ends in Softmax again; --logits leaves it off",
        .enabled(if: FileManager.default.isExecutableFile(atPath: python)))
    func squeezenetShaped() throws {
        let d = try Scratch.folder("kdtool-squeeze")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let make = """
            import sys, numpy as np, onnx
            from onnx import helper, TensorProto, numpy_helper
            r = np.random.default_rng(3)
            w = numpy_helper.from_array(r.standard_normal((5, 3, 1, 1)).astype(np.float32), "w")
            b = numpy_helper.from_array(r.standard_normal(5).astype(np.float32), "b")
            nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                     helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Softmax", ["g"], ["y"], axis=1)]
            g = helper.make_graph(nodes, "squeeze", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 1, 1])], [w, b])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
            onnx.save(m, sys.argv[1])
            np.save(sys.argv[2], r.standard_normal((1, 3, 8, 8)).astype(np.float32))
            """
        let made = try CLI.exec(Self.python, ["-c", make, p("squeeze.onnx"), p("x.npy")])
        #expect(made.status == 0, "\(made.err)")
        let i = try CLI.run(["import", p("squeeze.onnx"), "-o", p("m.kdb")])
        #expect(i.status == 0 && i.out.contains("5 outputs"), "\(i.out)\(i.err)")
        #expect(try CLI.run(["export", p("m.kdb"), "-o", p("back.onnx")]).status == 0)
        #expect(try CLI.run(["export", p("m.kdb"), "-o", p("logits.onnx"), "--logits"]).status == 0)
        let compare = """
            import sys, numpy as np, onnxruntime as ort
            x = np.load(sys.argv[4])
            run = lambda f: ort.InferenceSession(f, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].reshape(1, -1)
            orig, back, logits = run(sys.argv[1]), run(sys.argv[2]), run(sys.argv[3])
            print(float(np.abs(orig - back).max()), float(abs(logits.sum() - 1.0)))
            """
        let c = try CLI.exec(Self.python, ["-c", compare, p("squeeze.onnx"), p("back.onnx"), p("logits.onnx"), p("x.npy")])
        #expect(c.status == 0, "\(c.err)")
        let parts = c.out.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(parts.count == 2 && parts[0] < 1e-5, "export computes the original's probabilities: \(c.out)")
        #expect(parts.count == 2 && parts[1] > 1e-3, "--logits writes logits, which do not sum to 1: \(c.out)")
        // And the round trip is stable: importing the export gives the same model.
        let again = try CLI.run(["import", p("back.onnx"), "-o", p("again.kdb")])
        #expect(again.status == 0 && again.out.contains("5 outputs"), "\(again.out)\(again.err)")
    }
}

@Suite("static-batch exports", .serialized)
struct StaticBatchImportTests {
    @Test(
        "a Reshape constant that starts with the exported batch size is the batch: the model runs at any batch size",
        .enabled(if: FileManager.default.isExecutableFile(atPath: ImportExportFunctionTests.python)))
    func staticBatchReshape() throws {
        let d = try Scratch.folder("kdtool-static-batch")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let make = """
            import sys, numpy as np, onnx, onnxruntime as ort
            from onnx import helper, TensorProto, numpy_helper
            r = np.random.default_rng(5)
            w = numpy_helper.from_array(r.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
            shape = numpy_helper.from_array(np.array([2, 4 * 6 * 6], dtype=np.int64), "shape")
            fc = numpy_helper.from_array(r.standard_normal((7, 144)).astype(np.float32), "fc")
            nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                     helper.make_node("Reshape", ["r", "shape"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
            g = helper.make_graph(nodes, "static", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])], [w, shape, fc])
            onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), sys.argv[1])
            x = r.standard_normal((2, 3, 8, 8)).astype(np.float32)
            np.save(sys.argv[2], x)
            np.save(sys.argv[3], ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])
            np.save(sys.argv[4], np.concatenate([x, x[:1]]))
            """
        let made = try CLI.exec(ImportExportFunctionTests.python, ["-c", make, p("m.onnx"), p("x.npy"), p("y.npy"), p("x3.npy")])
        #expect(made.status == 0, "\(made.err)")
        let i = try CLI.run(["import", p("m.onnx"), "-o", p("m.kdb")])
        #expect(i.status == 0, "\(i.err)")
        let r2 = try CLI.run(["run", p("m.kdb"), "--input", p("x.npy"), "-o", p("y2.npy")])
        #expect(r2.status == 0 && r2.out.contains("[2, 7]"), "\(r2.out)\(r2.err)")
        let r3 = try CLI.run(["run", p("m.kdb"), "--input", p("x3.npy"), "-o", p("y3.npy")])
        #expect(r3.status == 0 && r3.out.contains("[3, 7]"), "a batch of 3 through a graph exported at batch 2: \(r3.out)\(r3.err)")
        let check = """
            import sys, numpy as np
            want, got = np.load(sys.argv[1]), np.load(sys.argv[2])
            print(float(np.abs(want - got).max() / max(1e-6, np.abs(want).max())))
            """
        let c = try CLI.exec(ImportExportFunctionTests.python, ["-c", check, p("y.npy"), p("y2.npy")])
        #expect((Double(c.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1) < 1e-4, "matches ONNX Runtime: \(c.out)\(c.err)")
    }
}
