import Foundation
import KDInterop
import KDNN
import KDTensor
import Testing

@testable import KDBundle

/// The op-completeness check: every op of the graph op set has a golden case (Tests/KDTensorTests/
/// Golden/ops.json, from tools/gen_golden.py), a shape rule that agrees with it, an ONNX form that
/// exports and imports back to the same function, an entry in the Python reader's op table and a
/// line in the Spec — so an op cannot be half-added.
@Suite("Op set: every op is defined everywhere")
struct OpSetTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    nonisolated(unsafe) static let golden: [[String: Any]] = {
        let url = root.appendingPathComponent("Tests/KDTensorTests/Golden/ops.json")
        let doc = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return doc["cases"] as! [[String: Any]]
    }()

    static func tensor(_ v: Any) -> Tensor {
        let d = v as! [String: Any]
        return Tensor(shape: d["shape"] as! [Int], values: (d["values"] as! [Double]).map { Float($0) })
    }

    /// A golden case's attributes as the bundle stores them (typed by the op's schema).
    static func attributes(_ op: Graph.Op, _ raw: [String: Any]) -> [String: Value] {
        var out: [String: Value] = [:]
        for (key, kind) in op.schema.attrs {
            guard let v = raw[key] else { continue }
            switch kind {
            case .ints: out[key] = .ints((v as! [Int]).map(Int64.init))
            case .uint: out[key] = .uint(UInt64(v as! Int))
            case .int: out[key] = .int(Int64(v as! Int))
            case .float: out[key] = .float((v as! NSNumber).doubleValue)
            case .bool: out[key] = .bool(v as! Bool)
            }
        }
        return out
    }

    /// Golden inputs in the order the op reads them.
    static func inputs(_ c: [String: Any]) -> [(String, Tensor)] {
        let order = ["x", "z", "a", "w", "g", "gamma", "b", "w0", "b0", "w1", "b1"]
        let raw = c["inputs"] as! [String: Any]
        return raw.keys.sorted { (order.firstIndex(of: $0) ?? 99) < (order.firstIndex(of: $1) ?? 99) }.map { ($0, tensor(raw[$0]!)) }
    }

    @Test("golden case, shape rule, Python reader and Spec", arguments: Graph.Op.allCases.map(\.rawValue))
    func defined(op name: String) throws {
        let op = try #require(Graph.Op(rawValue: name))
        let cases = Self.golden.filter { $0["op"] as? String == name }
        #expect(!cases.isEmpty, "no golden case for '\(name)' in ops.json (tools/gen_golden.py)")
        let reader = try String(contentsOf: Self.root.appendingPathComponent("tools/kdb_reader.py"), encoding: .utf8)
        #expect(reader.contains("\"\(name)\": ("), "tools/kdb_reader.py has no OPS entry for '\(name)'")
        let spec = try String(contentsOf: Self.root.appendingPathComponent("Spec/bundle-format.md"), encoding: .utf8)
        #expect(spec.contains("`\(name)`"), "Spec/bundle-format.md does not list '\(name)'")
        for c in cases {
            let ins = Self.inputs(c)
            let node = Graph.Node(
                name: "n", op: op, inputs: ins.map(\.0), outputs: ["y"], attrs: Self.attributes(op, c["attrs"] as! [String: Any]))
            // Op-set-1 golden cases predate the graph's attribute set for a few ops (batch norm's momentum);
            // every op-set-2 case is a complete node.
            guard op.opset == 2 || (try? Graph.outputShape(of: node, inputs: ins.map(\.1.shape))) != nil else { continue }
            let shape = try Graph.outputShape(of: node, inputs: ins.map(\.1.shape))
            #expect(shape == Self.tensor(c["output"]!).shape, "\(c["name"]!): the shape rule says \(shape)")
        }
    }

    /// Each op-set-2 case as a one-node model (first input the graph input, the others stored):
    /// the model computes the golden output, and exporting it to ONNX and importing that back
    /// computes the same values.
    @Test(
        "op-set-2 ops run, export to ONNX and import back",
        arguments: Self.golden.filter { c in
            (Graph.Op(rawValue: c["op"] as! String)?.opset == 2 || (c["name"] as! String).hasPrefix("conv2d-depthwise")
                || c["name"] as! String == "linear-rank4")
        }.map { $0["name"] as! String })
    func roundTrip(name: String) throws {
        let c = try #require(Self.golden.first { $0["name"] as? String == name })
        let op = try #require(Graph.Op(rawValue: c["op"] as! String))
        let ins = Self.inputs(c)
        let x = ins[0].1
        var params: [String: Tensor] = [:]
        for (k, t) in ins.dropFirst() { params[k] = t }
        let node = Graph.Node(
            name: "n", op: op, inputs: ins.map(\.0), outputs: ["y"], attrs: Self.attributes(op, c["attrs"] as! [String: Any]))
        let graph = Graph(inputs: [.init(name: "x", shape: [-1] + x.shape.dropFirst())], outputs: ["y"], outputKind: .none, nodes: [node])
        let model = try Model(graph: graph, parameters: params, buffers: [:])
        let want = Self.tensor(c["output"]!)
        let y = try model.predict(x)
        let scale = max(1, want.array.map(abs).max() ?? 1)
        #expect(zip(y.array, want.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, "\(name): the model's output differs from golden")
        let bytes = try OnnxExporter.export(model, options: .init(opset: 18))
        let (back, _) = try OnnxImporter.load(bytes: bytes, path: "\(name).onnx")
        let z = try back.predict(x)
        // An [N, K, 1, 1] graph output comes back flattened to [N, K] (import's classifier rule): same values.
        #expect(z.count == y.count)
        #expect(zip(z.array, y.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(name): export → import changed the function")
        // The inference plan (epilogues, depthwise kernel) computes the same.
        let p = try InferencePlan(model).run(x)
        #expect(zip(p.array, y.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(name): the inference plan differs")
    }

    @Test("a bundle with an op-set-2 op is format 1.1 and op set 2; one without stays 1.0 and op set 1")
    func versions() throws {
        let relu = Graph(
            inputs: [.init(name: "x", shape: [-1, 4])], outputs: ["y"], outputKind: .none,
            nodes: [Graph.Node(name: "r", op: .relu, inputs: ["x"], outputs: ["y"])])
        #expect(relu.requiredOpset == 1)
        let hs = Graph(
            inputs: [.init(name: "x", shape: [-1, 4])], outputs: ["y"], outputKind: .none,
            nodes: [Graph.Node(name: "h", activation: .hardswish, input: "x", output: "y")])
        #expect(hs.requiredOpset == 2)
        for (g, minor, opset) in [(relu, UInt16(0), UInt64(1)), (hs, UInt16(1), UInt64(2))] {
            var contents = BundleContents()
            contents.graph = g
            let bytes = try BundleWriter.encode(contents)
            #expect(bytes[10] == UInt8(minor) && bytes[11] == 0)
            let b = try ModelBundle(bytes: bytes)
            #expect(try b.graph()?.requiredOpset == Int(opset))
        }
    }
}

@Suite("Op set 2: broadcasting with a stored operand first")
struct BroadcastOrderTests {
    @Test("constant − x with a [1, C, 1, 1] constant runs at any batch size; a stored operand may not set the batch")
    func constantFirst() throws {
        let c = Tensor(shape: [1, 2, 1, 1], values: [10, 20])
        let g = Graph(
            inputs: [.init(name: "x", shape: [-1, 2, 2, 2])], outputs: ["y"], outputKind: .none,
            nodes: [Graph.Node(name: "s", op: .sub, inputs: ["c", "x"], outputs: ["y"])])
        let m = try Model(graph: g, parameters: ["c": c], buffers: [:])
        let x = Tensor(shape: [3, 2, 2, 2], repeating: 1)
        let y = try InferencePlan(m).run(x)
        #expect(y.shape == [3, 2, 2, 2] && y[0] == 9 && y[4] == 19 && y[23] == 19)
        #expect(try m.predict(x).array == y.array)
        // The shape proof (what a reader runs on every bundle) refuses a stored [3, 2, 1, 1] against the batch.
        #expect(throws: (any Error).self) { try g.stats(tensorShapes: ["c": [3, 2, 1, 1]], batch: 1) }
        #expect(try g.stats(tensorShapes: ["c": [1, 2, 1, 1]], batch: 5).last?.outputShape == [5, 2, 2, 2])
    }
}
