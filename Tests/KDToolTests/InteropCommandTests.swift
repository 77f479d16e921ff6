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
        #expect(u.status == 2 && u.err.contains("LeakyRelu") && u.err.contains("Tanh"), "\(u.err)")
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
