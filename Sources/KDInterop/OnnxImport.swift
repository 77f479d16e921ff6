import Foundation
import KDBundle
import KDIO
import KDNN
import KDTensor
import SwiftProtobuf

/// ONNX → model bundle. Nodes whose inputs are all constants are evaluated at import (Constant,
/// Shape of a known shape, Gather, Unsqueeze, Concat, …); the rest map onto the closed op set
/// (Spec §7.2). Unsupported nodes are reported all at once.
///
///     let model = try OnnxImporter.load(path: "resnet.onnx")
public enum OnnxImporter {
    /// What an import did besides the graph (for provenance and messages).
    public struct Notes: Sendable {
        /// Nodes folded into constants at import.
        public var folded = 0
        /// A trailing Softmax/Sigmoid that became the graph's output kind.
        public var strippedOutputActivation: String?
        /// An [N, K, 1, 1] output was flattened to [N, K].
        public var flattenedOutput = false
        /// PREP came from a kdtool export's `kdtool.preprocessing` metadata.
        public var preprocessingFromMetadata = false
        public var opset = 0
        public var producer = ""
    }

    public static func load(path: String) throws -> (Model, Notes) { try load(bytes: try Files.readAll(path), path: path) }

    /// An ONNX model from its bytes; `path` names it in messages and locates external data.
    public static func load(bytes: [UInt8], path: String) throws -> (Model, Notes) {
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: bytes)
        } catch {
            throw InteropError(path, "not an ONNX model (protobuf decoding failed: \(error))")
        }
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var b = Builder(path: path, directory: dir)
        return try b.build(proto)
    }

    /// Batch size standing in a shape value computed at import (`Shape` of an activation).
    static let batchToken: Int64 = Int64.min + 7

    /// A value known at import time.
    struct Const {
        var shape: [Int]
        var floats: [Float]?
        var ints: [Int64]?
        /// Shapes of constants are proven to fit when the constant is made (`Builder.checkedCount`).
        var count: Int { shape.reduce(1, *) }
        /// Floats as integers, truncated; NaN and values beyond Int64 saturate (to Int64.min for NaN),
        /// so a size or axis made from them fails its range check instead of trapping.
        var asInts: [Int64] { ints ?? (floats ?? []).map(Const.saturating) }

        static func saturating(_ f: Float) -> Int64 {
            guard f.isFinite else { return f == .infinity ? Int64.max : Int64.min }
            if f >= 9.2e18 { return Int64.max }
            if f <= -9.2e18 { return Int64.min }
            return Int64(f)
        }
        var asFloats: [Float] { floats ?? (ints ?? []).map { Float($0) } }
    }

    struct Builder {
        let path: String
        let directory: String
        var consts: [String: Const] = [:]
        var alias: [String: String] = [:]
        var nodes: [Graph.Node] = []
        var params: [String: Tensor] = [:]
        var buffers: [String: Tensor] = [:]
        var inputName = ""
        /// The batch size of a static-batch export (the input's first dimension when it is a number > 1):
        /// a Reshape target that starts with it means "the batch".
        var staticBatch: Int64?
        /// GELU and SiLU written as primitive ops, found before conversion (`activationPatterns`).
        var fused = Fused()
        /// Outputs of Reshape(x, [-1]) in a batch-1 export, to x.
        var flattenedAll: [String: String] = [:]
        var inputShape: [Int] = []
        var unsupported: [String] = []
        var notes = Notes()
        var names = Set<String>()
        var functions: [String: Onnx_FunctionProto] = [:]
        var nameSuffix: [String: Int] = [:]
        var parameterSuffix: [String: Int] = [:]
        let shapeCache = ShapeCache()
        /// Elements of every constant made so far (initializers and folded values), against `Caps.foldedElements`.
        var constantElements = 0

        init(path: String, directory: String) {
            self.path = path
            self.directory = directory
        }

        func fail(_ m: String) -> InteropError { InteropError(path, m) }

        mutating func build(_ m: Onnx_ModelProto) throws -> (Model, Notes) {
            let opset = m.opsetImport.first { $0.domain == "" || $0.domain == "ai.onnx" }?.version ?? 0
            guard (9...22).contains(opset) else { throw fail("opset \(opset) of the default domain is not supported (9…22)") }
            notes.opset = Int(opset)
            notes.producer = [m.producerName, m.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
            let g = m.graph
            for f in m.functions where f.domain == "kdtool" { functions[f.name] = f }
            for t in g.initializer { consts[t.name] = try tensor(t) }
            let real = g.input.filter { consts[$0.name] == nil }
            guard real.count == 1 else {
                throw fail(
                    "the graph has \(real.count) non-constant inputs (\(real.map(\.name).joined(separator: ", "))); one image input is supported"
                )
            }
            inputName = real[0].name
            let dims = real[0].type.tensorType.shape.dim
            guard real[0].type.tensorType.elemType == 1 else { throw fail("input '\(inputName)' is not float32") }
            if case .dimValue(let b)? = dims.first?.value, b >= 1 { staticBatch = b }
            inputShape = dims.enumerated().map { i, d in
                if i == 0 { return -1 }
                if case .dimValue(let v)? = d.value { return Int(v) }
                return 0
            }
            guard (2...Format.maxRank).contains(inputShape.count), !inputShape.dropFirst().contains(where: { $0 <= 0 }) else {
                throw fail(
                    "input '\(inputName)' must be N×C×H×W, N×F or another rank up to \(Format.maxRank) with fixed sizes after the batch, got \(dims.map { d -> String in if case .dimValue(let v)? = d.value { return String(v) } else { return d.dimParam } })"
                )
            }
            names.insert(inputName)
            fused = Self.activationPatterns(g)
            for (i, n) in g.node.enumerated() {
                if fused.skipped.contains(i) { continue }
                if let (f, input) = fused.at[i] {
                    let name = uniqueName(n.name.isEmpty ? "\(f.kind.rawValue)_\(i)" : n.name)
                    nodes.append(Graph.Node(name: name, activation: f, input: resolve(input), output: n.output[0]))
                    continue
                }
                try convert(n, index: i)
            }
            if !unsupported.isEmpty {
                throw fail("\(unsupported.count) nodes cannot be imported:\n  " + unsupported.joined(separator: "\n  "))
            }
            guard g.output.count == 1 else { throw fail("the graph has \(g.output.count) outputs; one is supported") }
            var output = resolve(g.output[0].name)
            var kind = Graph.OutputKind.softmax
            // A trailing Softmax/Sigmoid becomes the output kind (the model stores logits); otherwise a kdtool export's
            // recorded output kind is restored.
            if let last = nodes.last, last.outputs[0] == output, last.op == .softmax || last.op == .sigmoid {
                kind = last.op == .softmax ? .softmax : .sigmoid
                notes.strippedOutputActivation = last.op.rawValue
                output = last.inputs[0]
                nodes.removeLast()
            } else if let meta = m.metadataProps.first(where: { $0.key == "kdtool.output_kind" }),
                let k = Graph.OutputKind(rawValue: meta.value)
            {
                kind = k
            }
            // Only initializers the graph reads are kept.
            let used = Set(nodes.flatMap(\.inputs))
            params = params.filter { used.contains($0.key) }
            buffers = buffers.filter { used.contains($0.key) }
            // An output of [N, K, 1, 1] (a classifier ending in a 1×1 convolution or pooling, e.g. SqueezeNet) has K
            // classes: it is flattened to [N, K].
            var shapes: [String: [Int]] = [:]
            for (k, v) in params { shapes[k] = v.shape }
            for (k, v) in buffers { shapes[k] = v.shape }
            let probe = Graph(inputs: [.init(name: inputName, shape: inputShape)], outputs: [output], outputKind: kind, nodes: nodes)
            if let outShape = (try? probe.stats(tensorShapes: shapes, batch: 1))?.first(where: { $0.node.outputs[0] == output })?
                .outputShape,
                outShape.count == 4, outShape[2] == 1, outShape[3] == 1
            {
                let flat = uniqueName(output + "_flatten")
                nodes.append(Graph.Node(name: flat, op: .flatten, inputs: [output], outputs: [flat], attrs: ["axis": .int(1)]))
                output = flat
                notes.flattenedOutput = true
            }
            let graph = Graph(inputs: [.init(name: inputName, shape: inputShape)], outputs: [output], outputKind: kind, nodes: nodes)
            let model: Model
            do {
                model = try Model(graph: graph, parameters: params, buffers: buffers)
                var shapes: [String: [Int]] = [:]
                for (k, v) in params { shapes[k] = v.shape }
                for (k, v) in buffers { shapes[k] = v.shape }
                _ = try graph.stats(tensorShapes: shapes, batch: 1)
            } catch {
                throw fail("the imported graph is inconsistent: \(error)")
            }
            // The original computed probabilities: `kdtool export` writes the activation again (unless --logits).
            if let stripped = notes.strippedOutputActivation { model.metadata[OnnxExporter.outputActivationKey] = .string(stripped) }
            if let labels = m.metadataProps.first(where: { $0.key == "kdtool.labels" })?.value {
                model.labels = Labels(labels.split(separator: "\n", omittingEmptySubsequences: false).map(String.init))
            }
            if let json = m.metadataProps.first(where: { $0.key == "kdtool.preprocessing" })?.value {
                model.preprocessing = try preprocessing(json, input: inputShape)
                notes.preprocessingFromMetadata = model.preprocessing != nil
            }
            return (model, notes)
        }

        /// A kdtool export's `kdtool.preprocessing` metadata back into PREP, every field checked
        /// against the graph's input (nil when the normalisation is already in the graph).
        func preprocessing(_ json: String, input: [Int]) throws -> Preprocessing? {
            func bad(_ why: String) -> InteropError { fail("metadata kdtool.preprocessing: \(why)") }
            guard json.utf8.count <= 1 << 16, let doc = try? MiniJSON.parse(Array(json.utf8)) as? [String: Any] else {
                throw bad("not a JSON object of at most 64 KiB")
            }
            if doc["normalization_in_graph"] as? Bool == true { return nil }
            guard input.count == 4 else { throw bad("the graph input is not N×C×H×W") }
            let (c, h, w) = (input[1], input[2], input[3])
            guard doc["channels"] as? Double == Double(c), doc["height"] as? Double == Double(h), doc["width"] as? Double == Double(w)
            else { throw bad("channels/height/width differ from the graph input \(Array(input.dropFirst()))") }
            func floats(_ key: String) throws -> [Float] {
                guard let a = doc[key] as? [Any], a.count == c else { throw bad("'\(key)' must list \(c) numbers") }
                return try a.map {
                    guard let d = $0 as? Double, d.isFinite, abs(d) <= 1e6 else {
                        throw bad("'\(key)' holds a value that is not a finite number")
                    }
                    return Float(d)
                }
            }
            let mean = try floats("mean")
            let std = try floats("std")
            guard std.allSatisfy({ $0 > 0 }) else { throw bad("'std' values must be positive") }
            guard let scale = doc["scale"] as? Double, scale.isFinite, scale > 0, scale <= 1 else { throw bad("'scale' must be in (0, 1]") }
            guard let r = (doc["resize"] as? String).flatMap(Preprocessing.Resize.init(rawValue:)) else {
                throw bad("'resize' must be stretch or shorter-side-crop")
            }
            guard let a = (doc["alpha"] as? String).flatMap(Preprocessing.Alpha.init(rawValue:)) else {
                throw bad("'alpha' must be white, black or drop")
            }
            guard let invert = doc["invert"] as? Bool else { throw bad("'invert' must be true or false") }
            return Preprocessing(channels: c, height: h, width: w, scale: scale, mean: mean, std: std, resize: r, alpha: a, invert: invert)
        }

        /// A constant the caller has checked exists; an error rather than a trap if it does not.
        func constant(_ name: String) throws -> Const {
            guard let c = consts[name] else { throw fail("'\(name)' is not a constant the import can read") }
            return c
        }

        func resolve(_ name: String) -> String {
            var n = name
            while let a = alias[n] { n = a }
            return n
        }

        // MARK: tensors

        /// The element count of an untrusted shape: every dimension ≥ 0, no overflow, at most the per-tensor cap.
        func checkedCount(_ dims: [Int64], _ what: String) throws -> Int {
            do {
                return try Checked(path).product(dims, what, cap: Caps.current.tensorElements)
            } catch let e as InputError {
                throw fail(e.message)
            }
        }

        func tensor(_ t: Onnx_TensorProto) throws -> Const {
            let count = try checkedCount(t.dims, "tensor '\(t.name)' dims")
            let shape = t.dims.map { Int($0) }
            var raw: [UInt8]? = t.hasRawData ? [UInt8](t.rawData) : nil
            if t.dataLocation == .external {
                raw = try external(t)
            }
            func need(_ size: Int) throws -> [UInt8] {
                let bytes = count.multipliedReportingOverflow(by: size)
                guard let r = raw, !bytes.overflow, r.count == bytes.partialValue else {
                    throw fail("tensor '\(t.name)' holds \(raw?.count ?? 0) bytes, shape \(shape) needs \(count) × \(size)")
                }
                return r
            }
            func typed(_ n: Int) throws {
                guard n == count else { throw fail("tensor '\(t.name)' has \(n) values for shape \(shape)") }
            }
            switch t.dataType {
            case 1:  // FLOAT
                if raw == nil {
                    guard t.floatData.count == count else {
                        throw fail("tensor '\(t.name)' has \(t.floatData.count) floats for shape \(shape)")
                    }
                    return Const(shape: shape, floats: t.floatData)
                }
                let r = try need(4)
                return Const(
                    shape: shape,
                    floats: r.withUnsafeBytes { p in (0..<count).map { Float(bitPattern: p.loadLE(UInt32.self, at: $0 * 4)) } })
            case 10, 16:  // FLOAT16, BFLOAT16 (raw, or one value per int32_data entry)
                let bits: [UInt16] =
                    raw != nil
                    ? try need(2).withUnsafeBytes { p in (0..<count).map { p.loadLE(UInt16.self, at: $0 * 2) } }
                    : t.int32Data.map { UInt16(truncatingIfNeeded: $0) }
                guard bits.count == count else { throw fail("tensor '\(t.name)' has \(bits.count) values for shape \(shape)") }
                return Const(
                    shape: shape,
                    floats: bits.map { t.dataType == 10 ? TensorConversion.halfToFloat($0) : TensorConversion.bf16ToFloat($0) })
            case 11:  // DOUBLE
                if raw == nil {
                    try typed(t.doubleData.count)
                    return Const(shape: shape, floats: t.doubleData.map { Float($0) })
                }
                return Const(
                    shape: shape,
                    floats: try need(8).withUnsafeBytes { p in
                        (0..<count).map { Float(Double(bitPattern: p.loadLE(UInt64.self, at: $0 * 8))) }
                    })
            case 7:  // INT64
                if raw == nil {
                    try typed(t.int64Data.count)
                    return Const(shape: shape, ints: t.int64Data)
                }
                return Const(
                    shape: shape,
                    ints: try need(8).withUnsafeBytes { p in (0..<count).map { Int64(bitPattern: p.loadLE(UInt64.self, at: $0 * 8)) } })
            case 6:  // INT32
                if raw == nil {
                    try typed(t.int32Data.count)
                    return Const(shape: shape, ints: t.int32Data.map { Int64($0) })
                }
                return Const(
                    shape: shape,
                    ints: try need(4).withUnsafeBytes { p in (0..<count).map { Int64(Int32(bitPattern: p.loadLE(UInt32.self, at: $0 * 4))) }
                    })
            case 3, 2, 9:  // INT8, UINT8, BOOL
                if raw == nil {
                    try typed(t.int32Data.count)
                    return Const(shape: shape, ints: t.int32Data.map { Int64($0) })
                }
                let r = try need(1)
                return Const(shape: shape, ints: r.map { t.dataType == 3 ? Int64(Int8(bitPattern: $0)) : Int64($0) })
            default:
                throw fail("tensor '\(t.name)' has data type \(t.dataType), not supported (float, float16, bfloat16, double, integers)")
            }
        }

        /// External data: `location` relative to the model's folder, `offset`, `length`. The file
        /// must resolve (links followed) to a regular file inside the model's folder.
        func external(_ t: Onnx_TensorProto) throws -> [UInt8] {
            let kv = Dictionary(t.externalData.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let loc = kv["location"], !loc.isEmpty else { throw fail("tensor '\(t.name)' has external data without a location") }
            guard let offset = Int(kv["offset"] ?? "0"), offset >= 0 else {
                throw fail("tensor '\(t.name)': external data offset '\(kv["offset"] ?? "")' is not a valid offset")
            }
            let length = try kv["length"].map { v -> Int in
                guard let l = Int(v), l >= 0 else { throw fail("tensor '\(t.name)': external data length '\(v)' is not a valid length") }
                return l
            }
            do {
                return try SafeFile.readRangeInside(folder: directory, relative: loc, offset: offset, length: length)
            } catch let e as InputError {
                throw fail("tensor '\(t.name)': external data: \(e)")
            }
        }

        // MARK: nodes

        mutating func convert(_ n: Onnx_NodeProto, index: Int) throws {
            guard n.input.count <= 10_000, n.attribute.count <= 1_000 else {
                throw fail("node #\(index) has too many inputs or attributes")
            }
            let ins = n.input.map { $0.isEmpty ? "" : resolve($0) }
            let label = "\(n.name.isEmpty ? "#\(index)" : n.name) (\(n.opType))"
            if n.domain == "kdtool", let f = functions[n.opType] {
                return try kdtoolFunction(n, f, ins, label: label, index: index)
            }
            guard n.domain.isEmpty || n.domain == "ai.onnx" else {
                unsupported.append("\(label): domain '\(n.domain)' is not supported")
                return
            }
            guard n.output.count >= 1, !n.output[0].isEmpty else { throw fail("node \(label) has no output") }
            guard n.opType == "Constant" || (!ins.isEmpty && !ins[0].isEmpty) else { throw fail("node \(label) has no input") }
            func attr(_ k: String) -> Onnx_AttributeProto? { n.attribute.first { $0.name == k } }
            func ints(_ k: String, _ d: [Int]) -> [Int] { attr(k).map { $0.ints.map { Int($0) } } ?? d }
            func int(_ k: String, _ d: Int) -> Int { attr(k).map { Int($0.i) } ?? d }
            func float(_ k: String, _ d: Float) -> Float { attr(k).map { $0.f } ?? d }
            let allConst = !ins.isEmpty && ins.allSatisfy { $0.isEmpty || consts[$0] != nil }
            if n.opType == "Constant" || (allConst && Self.foldable.contains(n.opType)) || n.opType == "Shape" {
                if let c = try fold(n, ins) {
                    let (total, o) = constantElements.addingReportingOverflow(c.count)
                    guard !o, total <= Caps.current.foldedElements else {
                        throw fail("constants folded at import exceed the limit of \(Caps.current.foldedElements) values (at \(label))")
                    }
                    constantElements = total
                    consts[n.output[0]] = c
                    notes.folded += 1
                    return
                }
            }
            if allConst && !["Constant"].contains(n.opType) {
                unsupported.append("\(label): constant computation of this op is not supported")
                return
            }
            let name = uniqueName(n.name.isEmpty ? "\(n.opType.lowercased())_\(index)" : n.name)
            let out = n.output.first ?? ""
            func node(_ op: Graph.Op, _ inputs: [String], _ attrs: [String: Value] = [:]) {
                nodes.append(Graph.Node(name: name, op: op, inputs: inputs, outputs: [out], attrs: attrs))
            }
            func param(_ c: String, _ suffix: String, buffer: Bool = false, transform: ((Const) -> Tensor)? = nil) throws -> String {
                let k = try constant(c)
                let t = transform?(k) ?? Tensor(shape: k.shape, values: k.asFloats)
                // Initializer names are kept when they look like parameter names; otherwise named after the node.
                var pname = c.isEmpty || c.contains("::") || c.hasPrefix("onnx") ? "\(name).\(suffix)" : c
                if (buffer ? params[pname] : buffers[pname]) != nil || nodes.contains(where: { $0.outputs[0] == pname })
                    || pname == inputName
                {
                    pname = "\(name).\(suffix)"
                }
                if buffer { buffers[pname] = t } else { params[pname] = t }
                return pname
            }
            func isConst(_ i: Int) -> Bool { i < ins.count && consts[ins[i]] != nil }
            switch n.opType {
            case "Identity",
                "Dropout" where n.opType == "Identity" || nodes.isEmpty || true:
                if n.opType == "Dropout" {
                    let ratio = Self.decimal(isConst(1) ? (try constant(ins[1])).asFloats.first ?? 0.5 : float("ratio", 0.5))
                    node(.dropout, [ins[0]], ["ratio": .float(ratio)])
                } else {
                    alias[out] = ins[0]
                }
            case "Conv":
                guard isConst(1), ins.count < 3 || ins[2].isEmpty || isConst(2) else {
                    return unsupported.append("\(label): weights must be initializers")
                }
                guard (attr("auto_pad")?.s).map({ String(decoding: $0, as: UTF8.self) }) ?? "NOTSET" == "NOTSET" else {
                    return unsupported.append("\(label): auto_pad is not supported (exporters write explicit pads)")
                }
                let w = (try constant(ins[1]))
                guard w.shape.count == 4 else { return unsupported.append("\(label): only 2-D convolutions are supported") }
                guard ints("strides", [1, 1]).count == 2, ints("pads", [0, 0, 0, 0]).count == 4, ints("dilations", [1, 1]).count == 2,
                    int("group", 1) >= 1
                else { throw fail("\(label): strides, pads, dilations or group are malformed") }
                var inputs = [ins[0], try param(ins[1], "weight")]
                if ins.count > 2 && !ins[2].isEmpty { inputs.append(try param(ins[2], "bias")) }
                node(
                    .conv2d, inputs,
                    [
                        "stride": .ints(ints("strides", [1, 1]).map(Int64.init)),
                        "pads": .ints(ints("pads", [0, 0, 0, 0]).map(Int64.init)),
                        "dilation": .ints(ints("dilations", [1, 1]).map(Int64.init)), "groups": .uint(UInt64(int("group", 1))),
                    ])
            case "Gemm":
                guard isConst(1), int("transA", 0) == 0 else { return unsupported.append("\(label): needs constant B and transA = 0") }
                guard (try constant(ins[1])).shape.count == 2 else {
                    throw fail("\(label): B has shape \((try constant(ins[1])).shape), not a matrix")
                }
                let alpha = float("alpha", 1)
                let beta = float("beta", 1)
                let transB = int("transB", 0) == 1
                let wname = try param(ins[1], "weight") { k in
                    let t = transB ? Tensor(shape: k.shape, values: k.asFloats) : Self.transpose(k)
                    if alpha != 1 { for i in 0..<t.count { t[i] *= alpha } }
                    return t
                }
                var inputs = [ins[0], wname]
                if ins.count > 2 && !ins[2].isEmpty {
                    guard isConst(2) else { return unsupported.append("\(label): bias C must be an initializer") }
                    guard let outF = params[wname]?.shape[0] else { throw fail("\(label): weight \(wname) is missing") }
                    let cCount = (try constant(ins[2])).count
                    guard cCount == 1 || cCount == outF else { throw fail("\(label): bias C has \(cCount) values for \(outF) outputs") }
                    inputs.append(
                        try param(ins[2], "bias") { k in
                            let v = k.asFloats
                            return Tensor(shape: [outF], values: (0..<outF).map { beta * v[v.count == 1 ? 0 : $0] })
                        })
                }
                node(.linear, inputs)
            case "MatMul":
                guard isConst(1), (try constant(ins[1])).shape.count == 2 else {
                    return unsupported.append("\(label): only activation × constant matrix is supported")
                }
                node(.linear, [ins[0], try param(ins[1], "weight") { Self.transpose($0) }])
            case "BatchNormalization":
                guard (1...4).allSatisfy(isConst) else { return unsupported.append("\(label): statistics must be initializers") }
                node(
                    .batchnorm,
                    [
                        ins[0], try param(ins[1], "weight"), try param(ins[2], "bias"), try param(ins[3], "running_mean", buffer: true),
                        try param(ins[4], "running_var", buffer: true),
                    ],
                    [
                        "epsilon": .float(Self.decimal(float("epsilon", 1e-5))),
                        "momentum": .float(Self.rounded(1 - Self.decimal(float("momentum", 0.9)))),
                    ])
            case "Relu": node(.relu, [ins[0]])
            case "Sigmoid": node(.sigmoid, [ins[0]])
            case "Softmax":
                let axis = int("axis", notes.opset >= 13 ? -1 : 1)
                node(.softmax, [ins[0]], ["axis": .int(Int64(axis == 1 ? -1 : axis))])
            case "MaxPool", "AveragePool":
                guard (attr("auto_pad")?.s).map({ String(decoding: $0, as: UTF8.self) }) ?? "NOTSET" == "NOTSET" else {
                    return unsupported.append("\(label): auto_pad is not supported")
                }
                let k = ints("kernel_shape", [])
                guard k.count == 2 else { return unsupported.append("\(label): only 2-D pooling is supported") }
                guard ints("strides", [1, 1]).count == 2, ints("pads", [0, 0, 0, 0]).count == 4, ints("dilations", [1, 1]).count == 2 else {
                    throw fail("\(label): strides, pads or dilations are malformed")
                }
                var a: [String: Value] = [
                    "kernel": .ints(k.map(Int64.init)), "stride": .ints(ints("strides", [1, 1]).map(Int64.init)),
                    "pads": .ints(ints("pads", [0, 0, 0, 0]).map(Int64.init)), "ceil_mode": .bool(int("ceil_mode", 0) == 1),
                ]
                if n.opType == "MaxPool" {
                    a["dilation"] = .ints(ints("dilations", [1, 1]).map(Int64.init))
                    node(.maxpool, [ins[0]], a)
                } else {
                    a["count_include_pad"] = .bool(int("count_include_pad", 0) == 1)
                    node(.avgpool, [ins[0]], a)
                }
            case "GlobalAveragePool": node(.globalavgpool, [ins[0]])
            case "Add", "Mul", "Sub", "Sum", "Div":
                try arithmetic(n, ins, name: name, out: out, label: label)
            case "Concat": node(.concat, ins, ["axis": .int(Int64(int("axis", 1)))])
            case "Flatten": node(.flatten, [ins[0]], ["axis": .int(Int64(int("axis", 1)))])
            case "Reshape":
                guard isConst(1) else { return unsupported.append("\(label): the target shape must be computable at import") }
                // The batch: a folded Shape → Gather chain (batchToken), or, in a static-batch export, the exported batch size.
                var target = (try constant(ins[1])).asInts.enumerated().map { i, d in
                    d == OnnxImporter.batchToken ? (i == 0 ? 0 : -1) : d
                }
                // A static-batch export writes the batch size it was traced at: when the rest of the target holds
                // exactly one image's values, that leading number is the batch.
                if let b = staticBatch, target.first == b, let s = shape(of: ins[0]), s.count >= 1 {
                    let perImage = s.dropFirst().reduce(1, *)
                    let rest = target.dropFirst().enumerated().map { i, d in d == 0 && i + 1 < s.count ? Int64(s[i + 1]) : d }
                    let known = rest.filter { $0 != -1 }.reduce(Int64(1)) { $0.multipliedReportingOverflow(by: $1).overflow ? -2 : $0 * $1 }
                    if known > 0, rest.contains(-1) ? Int64(perImage) % known == 0 : known == Int64(perImage) { target[0] = 0 }
                }
                if target == [-1], staticBatch != nil {
                    // Everything flattened, the batch too (a static-batch trace): per image, kept in case a Gather rebuilds the shape.
                    flattenedAll[out] = ins[0]
                    target = [0, -1]
                }
                node(.reshape, [ins[0]], ["shape": .ints(target)])
            case "DequantizeLinear", "QuantizeLinear":
                // Activation QDQ pairs of a quantized export: the value passes through unchanged.
                alias[out] = ins[0]
            case "Gather":
                // The dynamo exporter's as_strided: Reshape(x, [-1]) then Gather of every index in order, shaped
                // [batch, …] (a static-batch trace): a reshape of x.
                guard let src = flattenedAll[ins[0]], isConst(1), int("axis", 0) == 0, let s = shape(of: src) else {
                    return unsupported.append("\(label): Gather of an activation is not supported (only the as_strided identity)")
                }
                let idx = try constant(ins[1])
                let perImage = s.dropFirst().reduce(1, *)
                let b = Int(staticBatch ?? 1)
                guard idx.shape.first == b, idx.count == b * perImage, idx.asInts.elementsEqual((0..<Int64(b * perImage)).lazy) else {
                    return unsupported.append("\(label): Gather of an activation is not supported (only the as_strided identity)")
                }
                node(.reshape, [src], ["shape": .ints([0] + idx.shape.dropFirst().map(Int64.init))])
            case "Clip":
                // Bounds: inputs 1 and 2 (opset ≥ 11) or attributes; a missing one is unbounded.
                func bound(_ i: Int, _ key: String, _ d: Float) throws -> Float? {
                    if i < ins.count && !ins[i].isEmpty {
                        guard isConst(i), let v = (try constant(ins[i])).asFloats.first else { return nil }
                        return v
                    }
                    return attr(key).map { $0.f } ?? d
                }
                guard let lo = try bound(1, "min", -Float.greatestFiniteMagnitude),
                    let hi = try bound(2, "max", Float.greatestFiniteMagnitude),
                    lo.isFinite || lo == -.infinity, lo <= hi
                else { return unsupported.append("\(label): the bounds must be constants with min ≤ max") }
                let clamp = { (v: Float) in Swift.max(-Float.greatestFiniteMagnitude, Swift.min(Float.greatestFiniteMagnitude, v)) }
                nodes.append(Graph.Node(name: name, activation: .clip(min: clamp(lo), max: clamp(hi)), input: ins[0], output: out))
            case _ where Activation.fromOnnx(n.opType, floats: [:], strings: [:]) != nil:
                var floats: [String: Float] = [:]
                var strings: [String: String] = [:]
                for a in n.attribute {
                    if a.type == .float { floats[a.name] = a.f }
                    if a.type == .string { strings[a.name] = String(decoding: a.s, as: UTF8.self) }
                }
                guard let f = Activation.fromOnnx(n.opType, floats: floats, strings: strings) else { return }
                nodes.append(Graph.Node(name: name, activation: f, input: ins[0], output: out))
            case "ReduceMean":
                guard let rank = shape(of: ins[0])?.count else { return unsupported.append("\(label): the input's rank is unknown") }
                let raw = try attr("axes")?.ints ?? (isConst(1) ? constant(ins[1]).asInts : [])
                guard !raw.isEmpty else { return unsupported.append("\(label): reducing every axis (the batch too) is not supported") }
                guard raw.allSatisfy({ $0 >= -Int64(rank) && $0 < Int64(rank) }) else {
                    throw fail("\(label): axes \(raw) outside rank \(rank)")
                }
                let axes = raw.map { Int($0 < 0 ? $0 + Int64(rank) : $0) }
                let keep = int("keepdims", 1) == 1
                if rank == 4 && Set(axes) == [2, 3] && axes.count == 2 {
                    // Spatial mean: global average pooling (channel-blocked in the plan), flattened without keepdims.
                    if keep { return node(.globalavgpool, [ins[0]]) }
                    let pooled = uniqueName(name + "_pool")
                    nodes.append(Graph.Node(name: pooled, op: .globalavgpool, inputs: [ins[0]], outputs: [pooled]))
                    return node(.flatten, [pooled], ["axis": .int(1)])
                }
                node(.reduceMean, [ins[0]], ["axes": .ints(axes.map(Int64.init)), "keepdims": .bool(keep)])
            case "Transpose":
                guard let perm = attr("perm")?.ints, perm.first == 0 else {
                    return unsupported.append("\(label): a permutation that moves the batch axis is not supported")
                }
                node(.transpose, [ins[0]], ["perm": .ints(perm)])
            case "Slice":
                try slice(n, ins, name: name, out: out, label: label)
            case "Split":
                try split(n, ins, name: name, label: label)
            case "Pad":
                let mode = (attr("mode")?.s).map { String(decoding: $0, as: UTF8.self) } ?? "constant"
                guard mode == "constant" else { return unsupported.append("\(label): pad mode '\(mode)' is not supported (constant only)") }
                guard let rank = shape(of: ins[0])?.count else { return unsupported.append("\(label): the input's rank is unknown") }
                guard let raw = try attr("pads")?.ints ?? (isConst(1) ? constant(ins[1]).asInts : nil) else {
                    return unsupported.append("\(label): pads must be constants")
                }
                let value = try attr("value")?.f ?? (ins.count > 2 && !ins[2].isEmpty ? constant(ins[2]).asFloats.first ?? 0 : 0)
                var pads = [Int64](repeating: 0, count: 2 * rank)
                let axesIn =
                    ins.count > 3 && !ins[3].isEmpty ? (try constant(ins[3])).asInts.map { Int($0 < 0 ? $0 + Int64(rank) : $0) } : nil
                let axes = axesIn ?? Array(0..<rank)
                guard raw.count == 2 * axes.count, axes.allSatisfy({ $0 >= 0 && $0 < rank }) else {
                    throw fail("\(label): \(raw.count) pads for \(axes.count) axes")
                }
                for (k, a) in axes.enumerated() {
                    pads[a] = raw[k]
                    pads[a + rank] = raw[k + axes.count]
                }
                guard pads.allSatisfy({ $0 >= 0 }), value.isFinite else {
                    return unsupported.append("\(label): negative pads (cropping) or a non-finite value are not supported")
                }
                node(.pad, [ins[0]], ["pads": .ints(pads), "value": .float(Self.decimal(value))])
            case "Pow":
                // Constant exponents: x² (a decomposed layer norm's variance) is x·x, x^0.5 is √x, x¹ is x.
                guard isConst(1), let e = (try constant(ins[1])).asFloats.first, (try constant(ins[1])).count == 1 else {
                    return unsupported.append("\(label): only a constant scalar exponent is supported")
                }
                switch e {
                case 1: alias[out] = ins[0]
                case 2: node(.mul, [ins[0], ins[0]])
                case 0.5: nodes.append(Graph.Node(name: name, activation: .sqrt, input: ins[0], output: out))
                default: unsupported.append("\(label): exponent \(e) is not supported (1, 2 or 0.5)")
                }
            case "LayerNormalization":
                guard isConst(1), ins.count < 3 || ins[2].isEmpty || isConst(2) else {
                    return unsupported.append("\(label): scale and bias must be initializers")
                }
                var inputs = [ins[0], try param(ins[1], "weight")]
                if ins.count > 2 && !ins[2].isEmpty { inputs.append(try param(ins[2], "bias")) }
                node(
                    .layernorm, inputs,
                    ["axis": .int(Int64(int("axis", -1))), "epsilon": .float(Self.decimal(float("epsilon", 1e-5)))])
            default:
                unsupported.append("\(label): op \(n.opType) is not in kdtool's op set")
            }
        }

        /// A node that `export` wrote as a kdtool-domain function: the original op comes back.
        mutating func kdtoolFunction(_ n: Onnx_NodeProto, _ f: Onnx_FunctionProto, _ ins: [String], label: String, index: Int) throws {
            var fields: [String: String] = [:]
            for part in f.docString.split(separator: " ").dropFirst(2) {
                let kv = part.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
            }
            func list(_ k: String) -> [Int64] { (fields[k] ?? "").split(separator: ",").compactMap { Int64($0) } }
            let name = uniqueName(n.name.isEmpty ? "kdtool_\(index)" : n.name)
            guard ins.dropFirst().allSatisfy({ consts[$0] != nil }) else {
                return unsupported.append("\(label): weights must be initializers")
            }
            var inputs = [ins[0]]
            for (k, c) in ins.dropFirst().enumerated() {
                let t = (try constant(c))
                let pname = c.isEmpty || c.contains("::") ? "\(name).p\(k)" : c
                params[pname] = Tensor(shape: t.shape, values: t.asFloats)
                inputs.append(pname)
            }
            if f.docString.hasPrefix("kdtool split_linear") {
                nodes.append(
                    Graph.Node(
                        name: name, op: .splitLinear, inputs: inputs, outputs: [n.output[0]],
                        attrs: [
                            "in_splits": .ints(list("in_splits")), "shared": .uint(UInt64(fields["shared"].flatMap { UInt64($0) } ?? 0)),
                        ]))
            } else if f.docString.hasPrefix("kdtool l2norm_scale") {
                nodes.append(
                    Graph.Node(
                        name: name, op: .l2normScale, inputs: inputs, outputs: [n.output[0]],
                        attrs: ["groups": .ints(list("groups")), "epsilon": .float(fields["epsilon"].flatMap { Double($0) } ?? 1e-6)]))
            } else {
                unsupported.append("\(label): unknown kdtool function")
            }
        }

        /// `base`, or `base_2`, `base_3`, … when taken; the next suffix to try is kept per base, so
        /// many nodes of one name cost linear time, not quadratic.
        mutating func uniqueName(_ base: String) -> String {
            var n = base
            var k = nameSuffix[base] ?? 1
            while !names.insert(n).inserted {
                k += 1
                n = "\(base)_\(k)"
            }
            nameSuffix[base] = k
            return n
        }

        /// The Double a float32 attribute was written from (its shortest decimal form: 1e-5, not 9.99999974e-6).
        static func decimal(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }
        static func rounded(_ d: Double) -> Double { (d * 1e9).rounded() / 1e9 }

        static func transpose(_ k: Const) -> Tensor {
            let (r, c) = (k.shape[0], k.shape[1])
            let v = k.asFloats
            return Tensor(shape: [c, r], values: (0..<(r * c)).map { i in v[(i % r) * c + i / r] })
        }

        /// Add/Mul/Sub/Div/Sum. Two activations: `add` (Sum chains them) or the broadcasting op. An activation
        /// and a constant: a linear layer's bias (MatMul then Add), or else the broadcasting op reading the
        /// constant as a stored tensor (not a batch norm: training would turn that into a normalisation).
        mutating func arithmetic(_ n: Onnx_NodeProto, _ ins: [String], name: String, out: String, label: String) throws {
            let dynamic = ins.filter { consts[$0] == nil }
            let constants = ins.filter { consts[$0] != nil }
            let op: Graph.Op = ["Mul": .mul, "Sub": .sub, "Div": .div][n.opType] ?? .add
            if n.opType == "Sum" || (n.opType == "Add" && constants.isEmpty) {
                guard constants.isEmpty, dynamic.count >= 1 else { return unsupported.append("\(label): constant operands in Sum") }
                if dynamic.count == 1 {
                    alias[out] = dynamic[0]
                    return
                }
                var acc = dynamic[0]
                for (i, other) in dynamic.dropFirst().enumerated() {
                    let last = i == dynamic.count - 2
                    let o = last ? out : "\(name).partial\(i)"
                    nodes.append(
                        Graph.Node(name: last ? name : uniqueName("\(name).add\(i)"), op: .add, inputs: [acc, other], outputs: [o]))
                    acc = o
                }
                return
            }
            guard ins.count == 2 else { return unsupported.append("\(label): needs two operands") }
            if constants.isEmpty {
                nodes.append(Graph.Node(name: name, op: op, inputs: ins, outputs: [out]))
                return
            }
            guard dynamic.count == 1, constants.count == 1 else { return unsupported.append("\(label): needs at least one activation") }
            let c = (try constant(constants[0]))
            let v = c.asFloats
            let constantFirst = ins[0] != dynamic[0]
            // A MatMul followed by a bias Add is a linear layer with a bias.
            if n.opType == "Add", let li = nodes.lastIndex(where: { $0.outputs[0] == dynamic[0] }), nodes[li].op == .linear,
                nodes[li].inputs.count == 2, !nodes.contains(where: { $0.inputs.contains(dynamic[0]) }),
                let w = params[nodes[li].inputs[1]], v.count == w.shape[0] || v.count == 1, c.shape.filter({ $0 != 1 }).count <= 1
            {
                let bname = uniqueParameterName(nodes[li].name + ".bias")
                params[bname] = Tensor(shape: [w.shape[0]], values: (0..<w.shape[0]).map { v[v.count == 1 ? 0 : $0] })
                nodes[li].inputs.append(bname)
                alias[out] = nodes[li].outputs[0]
                return
            }
            let xShape = shape(of: dynamic[0])
            // Any other constant: stored, and broadcast against the activation (it may not add a batch dimension).
            guard let x = xShape, c.shape.count <= x.count, c.shape.count < x.count || c.shape.first == 1,
                Broadcast.shape(x, c.shape) != nil
            else { return unsupported.append("\(label): constant of shape \(c.shape) does not broadcast against \(xShape ?? [])") }
            // An initializer read by several nodes stays one stored tensor (as in the ONNX graph).
            let base =
                constants[0].isEmpty || constants[0].contains("::") || constants[0].hasPrefix("val_") ? "\(name).constant" : constants[0]
            let pname: String
            if let shared = params[base], shared.shape == c.shape, shared.array == v {
                pname = base
            } else {
                pname = uniqueParameterName(base)
                params[pname] = Tensor(shape: c.shape, values: v)
            }
            nodes.append(
                Graph.Node(name: name, op: op, inputs: constantFirst ? [pname, dynamic[0]] : [dynamic[0], pname], outputs: [out]))
        }

        /// `base` when no parameter, buffer, node output or input has it, else `base_2`, … (the next suffix
        /// to try is kept per base, so many constants of one name cost linear time).
        mutating func uniqueParameterName(_ base: String) -> String {
            func taken(_ n: String) -> Bool {
                params[n] != nil || buffers[n] != nil || n == inputName || nodes.contains { $0.outputs[0] == n }
            }
            var k = parameterSuffix[base] ?? 1
            var n = k > 1 ? "\(base)_\(k)" : base
            while taken(n) {
                k += 1
                n = "\(base)_\(k)"
            }
            parameterSuffix[base] = k
            return n
        }

        /// Slice with constant bounds and unit steps; a no-op slice of the batch axis is dropped.
        mutating func slice(_ n: Onnx_NodeProto, _ ins: [String], name: String, out: String, label: String) throws {
            func attr(_ k: String) -> [Int64]? { n.attribute.first { $0.name == k }?.ints }
            func input(_ i: Int) throws -> [Int64]? { i < ins.count && !ins[i].isEmpty ? (try constant(ins[i])).asInts : nil }
            guard (1..<min(ins.count, 5)).allSatisfy({ ins[$0].isEmpty || consts[ins[$0]] != nil }) else {
                return unsupported.append("\(label): starts, ends, axes and steps must be computable at import")
            }
            guard let starts = try attr("starts") ?? input(1), let ends = try attr("ends") ?? input(2),
                let rank = shape(of: ins[0])?.count
            else { return unsupported.append("\(label): starts, ends or the input's rank are unknown") }
            let axes = try attr("axes") ?? input(3) ?? (0..<Int64(starts.count)).map { $0 }
            let steps = try input(4) ?? [Int64](repeating: 1, count: starts.count)
            guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count,
                axes.allSatisfy({ $0 >= -Int64(rank) && $0 < Int64(rank) })
            else { throw fail("\(label): starts \(starts), ends \(ends), axes \(axes) and steps \(steps) do not agree (rank \(rank))") }
            guard steps.allSatisfy({ $0 == 1 }) else { return unsupported.append("\(label): steps other than 1 are not supported") }
            var keep: [(Int64, Int64, Int64)] = []
            for k in 0..<axes.count {
                let a = axes[k] < 0 ? axes[k] + Int64(rank) : axes[k]
                if a == 0 {
                    guard starts[k] == 0, ends[k] >= Int64(Int32.max) else {
                        return unsupported.append("\(label): slicing the batch axis is not supported")
                    }
                    continue
                }
                keep.append((a, starts[k], ends[k]))
            }
            if keep.isEmpty {
                alias[out] = ins[0]
                return
            }
            let clamp = { (v: Int64) in Swift.max(Int64(-1) << 40, Swift.min(Int64(1) << 40, v)) }
            nodes.append(
                Graph.Node(
                    name: name, op: .slice, inputs: [ins[0]], outputs: [out],
                    attrs: [
                        "axes": .ints(keep.map(\.0)), "starts": .ints(keep.map { clamp($0.1) }), "ends": .ints(keep.map { clamp($0.2) }),
                    ]))
        }

        /// Split into consecutive slices along one axis (sizes from the `split` input or attribute, else equal parts).
        mutating func split(_ n: Onnx_NodeProto, _ ins: [String], name: String, label: String) throws {
            guard let s = shape(of: ins[0]) else { return unsupported.append("\(label): the input's shape is unknown") }
            let raw = n.attribute.first { $0.name == "axis" }.map { Int($0.i) } ?? 0
            guard raw >= -s.count, raw < s.count else { throw fail("\(label): axis \(raw) outside rank \(s.count)") }
            let axis = raw < 0 ? raw + s.count : raw
            guard axis != 0 else { return unsupported.append("\(label): splitting the batch axis is not supported") }
            let parts = n.output.count
            var sizes: [Int64]
            if ins.count > 1 && !ins[1].isEmpty {
                guard consts[ins[1]] != nil else { return unsupported.append("\(label): split sizes must be constants") }
                sizes = (try constant(ins[1])).asInts
            } else if let a = n.attribute.first(where: { $0.name == "split" }) {
                sizes = a.ints
            } else {
                let each = (Int64(s[axis]) + Int64(parts) - 1) / Int64(max(parts, 1))
                sizes = (0..<parts).map { k in Swift.max(0, Swift.min(each, Int64(s[axis]) - Int64(k) * each)) }
            }
            guard sizes.count == parts, sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == Int64(s[axis]) else {
                throw fail("\(label): split sizes \(sizes) do not cover the \(s[axis]) values of axis \(axis)")
            }
            var start: Int64 = 0
            for (k, output) in n.output.enumerated() {
                defer { start += sizes[k] }
                if output.isEmpty { continue }
                nodes.append(
                    Graph.Node(
                        name: uniqueName("\(name)_\(k)"), op: .slice, inputs: [ins[0]], outputs: [output],
                        attrs: ["axes": .ints([Int64(axis)]), "starts": .ints([start]), "ends": .ints([start + sizes[k]])]))
            }
        }

        /// Dimension 1 of a value, from static shape inference over what has been built so far.
        func channelCount(of value: String) -> Int? { shape(of: value).flatMap { $0.count >= 2 ? $0[1] : nil } }

        /// Static shape inference at batch 1 over the nodes built so far. Nodes are only appended
        /// (a later bias input does not change a shape), so each node's shape is inferred once, in
        /// order, and kept: the cost is linear in the graph, whatever the number of questions.
        func shape(of value: String) -> [Int]? {
            if value == inputName { return [1] + inputShape.dropFirst() }
            if let p = params[value] { return p.shape }
            if let b = buffers[value] { return b.shape }
            while shapeCache.inferred < nodes.count {
                let node = nodes[shapeCache.inferred]
                shapeCache.inferred += 1
                let ins = node.inputs.map { i -> [Int]? in
                    i == inputName ? [1] + inputShape.dropFirst() : params[i]?.shape ?? buffers[i]?.shape ?? shapeCache.shapes[i] ?? nil
                }
                guard ins.allSatisfy({ $0 != nil }), let s = try? Graph.outputShape(of: node, inputs: ins.map { $0! }) else { continue }
                shapeCache.shapes[node.outputs[0]] = s
            }
            return shapeCache.shapes[value]
        }

        static let foldable: Set<String> = [
            "Identity", "Unsqueeze", "Squeeze", "Gather", "Concat", "Cast", "Reshape", "Mul", "Add", "Sub", "Div", "Slice",
            "ConstantOfShape", "Transpose", "DequantizeLinear", "Flatten", "Neg", "Sqrt", "Reciprocal",
        ]

        /// Evaluates a node whose inputs are constants (and `Shape` of an activation whose shape is
        /// known but for the batch). Returns nil when it cannot.
        func fold(_ n: Onnx_NodeProto, _ ins: [String]) throws -> Const? {
            func attr(_ k: String) -> Onnx_AttributeProto? { n.attribute.first { $0.name == k } }
            func c(_ i: Int) -> Const? { i < ins.count && !ins[i].isEmpty ? consts[ins[i]] : nil }
            func axes() -> [Int64]? { attr("axes")?.ints ?? c(1)?.asInts }
            func axis(_ a: Int64, _ rank: Int) throws -> Int {
                guard a >= -Int64(rank), a < Int64(rank) else {
                    throw fail("\(n.opType) '\(n.name)': axis \(a) is out of range for rank \(rank)")
                }
                return Int(a < 0 ? a + Int64(rank) : a)
            }
            switch n.opType {
            case "Constant":
                if let t = attr("value") { return try tensor(t.t) }
                if let f = attr("value_float") { return Const(shape: [], floats: [f.f]) }
                if let f = attr("value_floats") { return Const(shape: [f.floats.count], floats: f.floats) }
                if let i = attr("value_int") { return Const(shape: [], ints: [i.i]) }
                if let i = attr("value_ints") { return Const(shape: [i.ints.count], ints: i.ints) }
                return nil
            case "Shape":
                if let k = c(0) { return Const(shape: [k.shape.count], ints: k.shape.map(Int64.init)) }
                guard let s = shape(of: ins[0]) else { return nil }
                return Const(shape: [s.count], ints: s.enumerated().map { $0 == 0 ? OnnxImporter.batchToken : Int64($1) })
            case "Identity", "Cast":
                guard var k = c(0) else { return nil }
                if n.opType == "Cast", let to = attr("to")?.i {
                    if to == 1 || to == 10 || to == 11 { k = Const(shape: k.shape, floats: k.asFloats) }
                    if [6, 7].contains(to) { k = Const(shape: k.shape, ints: k.asInts) }
                }
                return k
            case "Unsqueeze":
                guard var k = c(0), let ax = axes() else { return nil }
                let rank = k.shape.count + ax.count
                let norm = try ax.map { try axis($0, rank) }
                guard Set(norm).count == norm.count else { throw fail("Unsqueeze '\(n.name)' repeats an axis in \(ax)") }
                for a in norm.sorted() { k.shape.insert(1, at: a) }
                return k
            case "Squeeze":
                guard var k = c(0) else { return nil }
                if let ax = axes() {
                    let norm = try ax.map { try axis($0, k.shape.count) }
                    guard Set(norm).count == norm.count, norm.allSatisfy({ k.shape[$0] == 1 }) else {
                        throw fail("Squeeze '\(n.name)': axes \(ax) must name distinct dimensions of size 1 in \(k.shape)")
                    }
                    for a in norm.sorted(by: >) { k.shape.remove(at: a) }
                } else {
                    k.shape = k.shape.filter { $0 != 1 }
                }
                return k
            case "Flatten":
                guard var k = c(0) else { return nil }
                let raw = Int(attr("axis")?.i ?? 1)
                guard raw >= -k.shape.count, raw <= k.shape.count else {
                    throw fail("Flatten '\(n.name)': axis \(raw) is out of range for rank \(k.shape.count)")
                }
                let a = raw < 0 ? raw + k.shape.count : raw
                k.shape = [k.shape[..<a].reduce(1, *), k.shape[a...].reduce(1, *)]
                return k
            case "Reshape":
                guard var k = c(0), let s = c(1)?.asInts else { return nil }
                if s.contains(OnnxImporter.batchToken) { return nil }
                guard s.filter({ $0 == -1 }).count <= 1, s.allSatisfy({ $0 >= -1 }), s.count <= 64 else {
                    throw fail("Reshape '\(n.name)': target \(s) needs sizes ≥ 0 and at most one −1")
                }
                var shape = try s.enumerated().map { i, d -> Int in
                    guard d != 0 else {
                        guard i < k.shape.count else { throw fail("Reshape '\(n.name)': 0 at position \(i) beyond the input's rank") }
                        return k.shape[i]
                    }
                    return Int(d)
                }
                if let f = shape.firstIndex(of: -1) {
                    let known = try checkedCount(shape.filter { $0 != -1 }.map(Int64.init), "Reshape '\(n.name)' target")
                    guard known > 0, k.count % known == 0 else { throw fail("Reshape '\(n.name)': cannot reshape \(k.shape) to \(s)") }
                    shape[f] = k.count / known
                }
                guard try checkedCount(shape.map(Int64.init), "Reshape '\(n.name)' target") == k.count else {
                    throw fail("Reshape '\(n.name)': cannot reshape \(k.shape) to \(s)")
                }
                k.shape = shape
                return k
            case "Gather":
                guard let data = c(0), let idx = c(1), (attr("axis")?.i ?? 0) == 0, data.shape.count == 1 else { return nil }
                let pick = idx.asInts.map { Int($0 < 0 ? $0 + Int64(data.shape[0]) : $0) }
                guard pick.allSatisfy({ $0 >= 0 && $0 < data.shape[0] }) else { throw fail("Gather index out of range in '\(n.name)'") }
                if let i = data.ints { return Const(shape: idx.shape, ints: pick.map { i[$0] }) }
                let f = data.asFloats
                return Const(shape: idx.shape, floats: pick.map { f[$0] })
            case "Concat":
                let parts = ins.compactMap { consts[$0] }
                guard parts.count == ins.count, parts.allSatisfy({ $0.shape.count == 1 }) else { return nil }
                if parts.allSatisfy({ $0.ints != nil }) {
                    return Const(shape: [parts.reduce(0) { $0 + $1.count }], ints: parts.flatMap(\.asInts))
                }
                return Const(shape: [parts.reduce(0) { $0 + $1.count }], floats: parts.flatMap(\.asFloats))
            case "Slice":
                guard let data = c(0), data.shape.count == 1, let starts = attr("starts")?.ints ?? c(1)?.asInts,
                    let ends = attr("ends")?.ints ?? c(2)?.asInts, starts.count == 1
                else { return nil }
                let nn = Int64(data.shape[0])
                func clampIndex(_ v: Int64) -> Int { Int(max(0, min(nn, v < 0 ? v + nn : v))) }
                let (s, e) = (clampIndex(starts[0]), clampIndex(ends[0]))
                let r = s < e ? Array(s..<e) : []
                if let i = data.ints { return Const(shape: [r.count], ints: r.map { i[$0] }) }
                let f = data.asFloats
                return Const(shape: [r.count], floats: r.map { f[$0] })
            case "ConstantOfShape":
                guard let s = c(0)?.asInts else { return nil }
                let value = attr("value").flatMap { try? tensor($0.t) }
                let count = try checkedCount(s, "ConstantOfShape '\(n.name)' shape")
                guard count <= Caps.current.foldedElements - constantElements else {
                    throw fail("ConstantOfShape '\(n.name)' asks for \(count) values, above the limit of \(Caps.current.foldedElements)")
                }
                let shape = s.map { Int($0) }
                if let v = value, v.ints != nil { return Const(shape: shape, ints: Array(repeating: v.asInts.first ?? 0, count: count)) }
                return Const(shape: shape, floats: Array(repeating: value?.asFloats.first ?? 0, count: count))
            case "Transpose":
                guard let k = c(0), k.shape.count == 2, attr("perm").map({ $0.ints == [1, 0] }) ?? true else { return nil }
                let t = OnnxImporter.Builder.transpose(k)
                return Const(shape: t.shape, floats: (0..<t.count).map { t[$0] })
            case "Neg", "Sqrt", "Reciprocal":
                guard let k = c(0) else { return nil }
                let f: (Float) -> Float = n.opType == "Neg" ? { -$0 } : n.opType == "Sqrt" ? { $0.squareRoot() } : { 1 / $0 }
                return Const(shape: k.shape, floats: k.asFloats.map(f))
            case "DequantizeLinear":
                guard let q = c(0), let s = c(1) else { return nil }
                let zp = c(2)?.asInts ?? [0]
                let sc = s.asFloats
                let ax = try axis(Int64(attr("axis")?.i ?? 1), max(q.shape.count, 1))
                guard !sc.isEmpty, sc.count == 1 || (q.shape.count > ax && sc.count == q.shape[ax]), zp.count == 1 || zp.count == sc.count
                else {
                    throw fail(
                        "DequantizeLinear '\(n.name)': \(sc.count) scales and \(zp.count) zero points do not fit \(q.shape) on axis \(ax)")
                }
                let inner = sc.count > 1 ? q.shape[(ax + 1)...].reduce(1, *) : q.count
                let v = q.asInts.enumerated().map { i, x -> Float in
                    let ch = sc.count > 1 ? (i / inner) % sc.count : 0
                    return sc[ch] * (Float(x) - Float(zp[zp.count > 1 ? ch : 0]))
                }
                return Const(shape: q.shape, floats: v)
            case "Mul", "Add", "Sub", "Div":
                guard let a = c(0), let b = c(1) else { return nil }
                if a.ints != nil, b.ints != nil {
                    let (x, y) = (a.asInts, b.asInts)
                    guard x.count == y.count || x.count == 1 || y.count == 1 else { return nil }
                    if (x + y).contains(OnnxImporter.batchToken) { return nil }
                    let n2 = max(x.count, y.count)
                    let f: (Int64, Int64) -> (Int64, Bool) =
                        switch n.opType {
                        case "Mul": { $0.multipliedReportingOverflow(by: $1) }
                        case "Add": { $0.addingReportingOverflow($1) }
                        case "Sub": { $0.subtractingReportingOverflow($1) }
                        default: { $1 == 0 ? (0, true) : $0.dividedReportingOverflow(by: $1) }
                        }
                    let values = try (0..<n2).map { i -> Int64 in
                        let (v, bad) = f(x[x.count == 1 ? 0 : i], y[y.count == 1 ? 0 : i])
                        guard !bad else { throw fail("\(n.opType) '\(n.name)' of integer constants overflows or divides by zero") }
                        return v
                    }
                    return Const(shape: x.count >= y.count ? a.shape : b.shape, ints: values)
                }
                let (x, y) = (a.asFloats, b.asFloats)
                guard x.count == y.count || x.count == 1 || y.count == 1 else { return nil }
                let f: (Float, Float) -> Float =
                    switch n.opType {
                    case "Mul": { $0 * $1 }
                    case "Add": { $0 + $1 }
                    case "Sub": { $0 - $1 }
                    default: { $0 / $1 }
                    }
                return Const(
                    shape: x.count >= y.count ? a.shape : b.shape,
                    floats: (0..<max(x.count, y.count)).map { f(x[x.count == 1 ? 0 : $0], y[y.count == 1 ? 0 : $0]) })
            default:
                return nil
            }
        }
    }
}

extension OnnxImporter.Builder {
    /// Activations exporters write as primitive ops: what to emit at which node, and the nodes it replaces.
    struct Fused {
        var at: [Int: (Activation, String)] = [:]
        var skipped = Set<Int>()
    }

    /// GELU (x·Φ(x) through Erf: Div(x, √2) or Mul(x, 1/√2) → Erf → Add 1 → Mul x and Mul 0.5 in either
    /// order) and SiLU (Mul(x, Sigmoid(x))), found by their shape in the ONNX graph, where every
    /// intermediate value has exactly one reader. One activation node replaces each.
    static func activationPatterns(_ g: Onnx_GraphProto) -> Fused {
        var producer: [String: Int] = [:]
        var readers: [String: [Int]] = [:]
        for (i, n) in g.node.enumerated() {
            for o in n.output where !o.isEmpty { producer[o] = i }
            for x in n.input where !x.isEmpty { readers[x, default: []].append(i) }
        }
        let outputs = Set(g.output.map(\.name))
        var scalars: [String: Float] = [:]
        for t in g.initializer where t.dims.reduce(1, *) == 1 {
            if t.dataType == 1, t.floatData.count == 1 { scalars[t.name] = t.floatData[0] }
            if t.dataType == 1, t.rawData.count == 4 {
                scalars[t.name] = t.rawData.withUnsafeBytes { Float(bitPattern: $0.loadLE(UInt32.self, at: 0)) }
            }
        }
        for n in g.node where n.opType == "Constant" {
            guard let t = n.attribute.first(where: { $0.name == "value" })?.t, t.dims.reduce(1, *) == 1, t.dataType == 1 else { continue }
            if t.floatData.count == 1 { scalars[n.output[0]] = t.floatData[0] }
            if t.rawData.count == 4 {
                scalars[n.output[0]] = t.rawData.withUnsafeBytes { Float(bitPattern: $0.loadLE(UInt32.self, at: 0)) }
            }
        }
        func only(_ v: String) -> Int? {
            guard !outputs.contains(v), let r = readers[v], r.count == 1 else { return nil }
            return r[0]
        }
        /// For a binary node, the operand that is not `v`, and whether it is a scalar near `value`.
        func other(_ n: Onnx_NodeProto, _ v: String) -> String? {
            guard n.input.count == 2 else { return nil }
            return n.input[0] == v ? n.input[1] : n.input[1] == v ? n.input[0] : nil
        }
        func near(_ name: String?, _ value: Float) -> Bool { name.flatMap { scalars[$0] }.map { abs($0 - value) < 1e-4 } ?? false }
        var fused = Fused()
        for (e, erf) in g.node.enumerated() where erf.opType == "Erf" && erf.input.count == 1 {
            guard let d = producer[erf.input[0]], only(erf.input[0]) == e else { continue }
            let div = g.node[d]
            guard div.input.count == 2, div.input[1] != div.input[0] else { continue }
            let x = div.input[0]
            guard (div.opType == "Div" && near(div.input[1], 1.41421356)) || (div.opType == "Mul" && near(div.input[1], 0.70710678)) else {
                continue
            }
            guard let a = only(erf.output[0]), g.node[a].opType == "Add", near(other(g.node[a], erf.output[0]), 1),
                let m1 = only(g.node[a].output[0]), g.node[m1].opType == "Mul", let o1 = other(g.node[m1], g.node[a].output[0]),
                let m2 = only(g.node[m1].output[0]), g.node[m2].opType == "Mul", let o2 = other(g.node[m2], g.node[m1].output[0])
            else { continue }
            // Mul(x, ·) then Mul(·, 0.5), or Mul(0.5, ·) then Mul(x, ·).
            guard (o1 == x && near(o2, 0.5)) || (near(o1, 0.5) && o2 == x) else { continue }
            fused.at[m2] = (.gelu(tanh: false), x)
            fused.skipped.formUnion([d, e, a, m1])
        }
        for (i, sig) in g.node.enumerated() where sig.opType == "Sigmoid" && sig.input.count == 1 && !fused.skipped.contains(i) {
            guard let m = only(sig.output[0]), g.node[m].opType == "Mul", other(g.node[m], sig.output[0]) == sig.input[0] else { continue }
            fused.at[m] = (.silu, sig.input[0])
            fused.skipped.insert(i)
        }
        return fused
    }
}

/// Output shapes of the nodes an import has built so far (see `Builder.shape(of:)`).
final class ShapeCache {
    var shapes: [String: [Int]] = [:]
    var inferred = 0
}
