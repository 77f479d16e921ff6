import Foundation
import KDBundle
import KDNN
import KDTensor
import SwiftProtobuf

/// Model bundle → ONNX. Every op of the closed set maps onto standard operators; the KC head ops
/// (split_linear, l2norm_scale) become model-local functions of the `kdtool` domain whose bodies
/// are Slice/Gemm/Concat and ReduceL2/Max/Div/Mul, so any runtime executes them and `import`
/// restores the original node. Quantized bundles export their int8 weights through
/// DequantizeLinear and their activation grids as QuantizeLinear/DequantizeLinear pairs.
///
///     let bytes = try OnnxExporter.export(model, bundle: bundle, options: .init(opset: 17))
public enum OnnxExporter {
    public struct Options: Sendable {
        public var opset: Int
        /// A symbolic batch dimension ("N", the default) instead of a fixed batch of 1.
        public var dynamicBatch: Bool
        /// Put the bundle's pixel normalisation (PREP: invert, scale, mean, std) into the graph as
        /// its first nodes, so the model takes pixel values 0…255 (input "pixels"). Resizing and
        /// alpha handling stay outside the graph; metadata_props describes them either way.
        public var includePreprocessing: Bool
        /// End the graph with the output kind's Softmax/Sigmoid, so it computes probabilities (an
        /// imported model whose original ended that way: `import(export(m))` is then `m`'s function).
        public var outputActivation: Bool
        public init(opset: Int = 17, dynamicBatch: Bool = true, includePreprocessing: Bool = false, outputActivation: Bool = false) {
            self.opset = opset
            self.dynamicBatch = dynamicBatch
            self.includePreprocessing = includePreprocessing
            self.outputActivation = outputActivation
        }
    }

    public static let supportedOpsets = 13...21

    /// META key an import sets when it took a trailing Softmax/Sigmoid off the graph ("softmax" | "sigmoid").
    public static let outputActivationKey = "kdtool.output_activation"

    public static func export(_ model: Model, bundle: ModelBundle? = nil, options: Options = Options()) throws -> [UInt8] {
        guard supportedOpsets.contains(options.opset) else {
            throw InteropError(
                "export", "opset \(options.opset) is not supported (\(supportedOpsets.lowerBound)…\(supportedOpsets.upperBound))")
        }
        var e = Emitter(opset: options.opset)
        let g = model.graph
        // Weights: int8 codes + DequantizeLinear for quantized tensors, plain floats otherwise.
        let quant = try bundle?.quantization()
        for name in model.tensorNames {
            guard let t = model.parameters[name] ?? model.buffers[name] else {
                throw InteropError("export", "tensor '\(name)' is listed but has no value")
            }
            if let b = bundle, let info = b.tensorInfo(named: name), let qi = info.quant, let p = quant?.params[qi], info.dtype == .i8 {
                let raw = try b.tensorData(named: name)
                var q = Onnx_TensorProto()
                q.name = name + "_quantized"
                q.dataType = 3
                q.dims = info.shape.map(Int64.init)
                q.rawData = Data(raw)
                e.initializers.append(q)
                e.initializers.append(floatTensor(name + "_scale", p.axis < 0 ? [] : [p.scale.count], p.scale))
                var zp = Onnx_TensorProto()
                zp.name = name + "_zero_point"
                zp.dataType = 3
                zp.dims = p.axis < 0 ? [] : [Int64(p.zeroPoint.count)]
                zp.rawData = Data(p.zeroPoint.map { UInt8(bitPattern: Int8($0)) })
                e.initializers.append(zp)
                var attrs: [Onnx_AttributeProto] = []
                if p.axis >= 0 { attrs.append(intAttr("axis", p.axis)) }
                e.node(
                    "DequantizeLinear", [name + "_quantized", name + "_scale", name + "_zero_point"], [name], name: name + "_dequantize",
                    attrs: attrs)
            } else {
                e.initializers.append(floatTensor(name, t.shape, Array(UnsafeBufferPointer(start: t.pointer, count: t.count))))
            }
        }
        var rename: [String: String] = [:]
        func v(_ n: String) -> String { rename[n] ?? n }
        /// Activation grid as a QuantizeLinear/DequantizeLinear pair after a value.
        func qdq(_ value: String) {
            guard let a = model.activationQuant[value] else { return }
            let s = e.constant(value + "_act_scale", [], [a.scale])
            var zp = Onnx_TensorProto()
            zp.name = value + "_act_zero_point"
            zp.dataType = 2
            zp.rawData = Data([UInt8(a.zeroPoint)])
            e.initializers.append(zp)
            e.node("QuantizeLinear", [value, s, zp.name], [value + "_q"], name: value + "_quantize")
            e.node("DequantizeLinear", [value + "_q", s, zp.name], [value + "_dq"], name: value + "_dequantize_act")
            rename[value] = value + "_dq"
        }
        qdq(g.inputs[0].name)
        // The graph's own node order when it is topological (so import(export(x)) == x), else the sorted one.
        var known = Set(model.tensorNames + [g.inputs[0].name])
        let stored = g.nodes.allSatisfy { n in
            defer { known.insert(n.outputs[0]) }
            return n.inputs.allSatisfy { known.contains($0) }
        }
        // Shapes at batch 1, for ops whose ONNX form depends on the input's rank.
        var shapes: [String: [Int]] = [g.inputs[0].name: [1] + g.inputs[0].shape.dropFirst()]
        for st in try g.stats(tensorShapes: model.tensorShapes, batch: 1) { shapes[st.node.outputs[0]] = st.outputShape }
        for node in stored ? g.nodes : model.order {
            let ins = node.inputs.map(v)
            let out = node.outputs[0]
            func ints(_ k: String) -> [Int] { node.ints(k) }
            switch node.op {
            case .conv2d:
                guard let w = model.parameters[node.inputs[1]]?.shape, w.count == 4 else {
                    throw InteropError("export", "conv2d '\(node.name)' has no 4-D weight")
                }
                e.node(
                    "Conv", ins, [out], name: node.name,
                    attrs: [
                        intsAttr("kernel_shape", [w[2], w[3]]), intsAttr("strides", ints("stride")), intsAttr("pads", ints("pads")),
                        intsAttr("dilations", ints("dilation")), intAttr("group", node.int("groups")),
                    ])
            case .linear where (shapes[node.inputs[0]]?.count ?? 2) == 2:
                e.node("Gemm", ins, [out], name: node.name, attrs: [intAttr("transB", 1)])
            case .linear:
                // Over the last axis of a rank-3+ input: MatMul by Wᵀ, then the bias.
                e.node("Transpose", [ins[1]], [node.name + "_weight_t"], name: node.name + "_transpose", attrs: [intsAttr("perm", [1, 0])])
                e.node("MatMul", [ins[0], node.name + "_weight_t"], [ins.count > 2 ? node.name + "_matmul" : out], name: node.name)
                if ins.count > 2 { e.node("Add", [node.name + "_matmul", ins[2]], [out], name: node.name + "_bias") }
            case .batchnorm:
                e.node(
                    "BatchNormalization", ins, [out], name: node.name,
                    attrs: [floatAttr("epsilon", Float(node.float("epsilon"))), floatAttr("momentum", Float(1 - node.float("momentum")))])
            case .relu: e.node("Relu", ins, [out], name: node.name)
            case .sigmoid: e.node("Sigmoid", ins, [out], name: node.name)
            case .maxpool:
                e.node(
                    "MaxPool", ins, [out], name: node.name,
                    attrs: [
                        intsAttr("kernel_shape", ints("kernel")), intsAttr("strides", ints("stride")), intsAttr("pads", ints("pads")),
                        intsAttr("dilations", ints("dilation")), intAttr("ceil_mode", node.bool("ceil_mode") ? 1 : 0),
                    ])
            case .avgpool:
                e.node(
                    "AveragePool", ins, [out], name: node.name,
                    attrs: [
                        intsAttr("kernel_shape", ints("kernel")), intsAttr("strides", ints("stride")), intsAttr("pads", ints("pads")),
                        intAttr("ceil_mode", node.bool("ceil_mode") ? 1 : 0),
                        intAttr("count_include_pad", node.bool("count_include_pad") ? 1 : 0),
                    ])
            case .globalavgpool: e.node("GlobalAveragePool", ins, [out], name: node.name)
            case .add: e.node("Add", ins, [out], name: node.name)
            case .concat: e.node("Concat", ins, [out], name: node.name, attrs: [intAttr("axis", node.int("axis"))])
            case .flatten: e.node("Flatten", ins, [out], name: node.name, attrs: [intAttr("axis", node.int("axis"))])
            case .reshape:
                let s = e.intConstant(node.name + "_shape", ints("shape").map(Int64.init))
                e.node("Reshape", [ins[0], s], [out], name: node.name)
            case .dropout:
                let r = e.constant(node.name + "_ratio", [], [Float(node.float("ratio"))])
                e.node("Dropout", [ins[0], r], [out], name: node.name)
            case .softmax: e.node("Softmax", ins, [out], name: node.name, attrs: [intAttr("axis", node.int("axis"))])
            case .splitLinear: e.splitLinear(node, ins, model: model)
            case .l2normScale: try e.l2normScale(node, ins, model: model)
            case .mul: e.node("Mul", ins, [out], name: node.name)
            case .sub: e.node("Sub", ins, [out], name: node.name)
            case .div: e.node("Div", ins, [out], name: node.name)
            case .reduceMean:
                let keep = intAttr("keepdims", node.bool("keepdims") ? 1 : 0)
                if options.opset >= 18 {
                    let axes = e.intConstant(node.name + "_axes", ints("axes").map(Int64.init))
                    e.node("ReduceMean", [ins[0], axes], [out], name: node.name, attrs: [keep])
                } else {
                    e.node("ReduceMean", ins, [out], name: node.name, attrs: [intsAttr("axes", ints("axes")), keep])
                }
            case .transpose: e.node("Transpose", ins, [out], name: node.name, attrs: [intsAttr("perm", ints("perm"))])
            case .pad:
                let pads = e.intConstant(node.name + "_pads", ints("pads").map(Int64.init))
                let value = e.constant(node.name + "_value", [], [Float(node.float("value"))])
                e.node("Pad", [ins[0], pads, value], [out], name: node.name)
            case .slice:
                let starts = e.intConstant(node.name + "_starts", ints("starts").map(Int64.init))
                let ends = e.intConstant(node.name + "_ends", ints("ends").map(Int64.init))
                let axes = e.intConstant(node.name + "_axes", ints("axes").map(Int64.init))
                e.node("Slice", [ins[0], starts, ends, axes], [out], name: node.name)
            case .layernorm:
                guard options.opset >= 17 else {
                    throw InteropError(
                        "export", "layernorm '\(node.name)' needs ONNX opset 17 or later (LayerNormalization); use --opset 17")
                }
                e.node(
                    "LayerNormalization", ins, [out], name: node.name,
                    attrs: [intAttr("axis", node.int("axis")), floatAttr("epsilon", Float(node.float("epsilon")))])
            case .activation:
                guard let f = node.activation else { throw InteropError("export", "node '\(node.name)' describes no \(node.op.rawValue)") }
                try e.activation(f, ins[0], out, name: node.name, opset: options.opset)
            }
            qdq(out)
        }
        var graph = Onnx_GraphProto()
        graph.name = "kdtool"
        graph.node = e.nodes
        graph.initializer = e.initializers
        var input = Onnx_ValueInfoProto()
        input.name = g.inputs[0].name
        input.type = tensorType(g.inputs[0].shape, dynamic: options.dynamicBatch)
        if options.includePreprocessing {
            guard let prep = model.preprocessing, g.inputs[0].shape.count == 4 else {
                throw InteropError("export", "--include-preprocessing needs an image model with a PREP section (this one has none)")
            }
            // pixels (0…255) → [255 − x] → × scale → − mean → ÷ std → the model's own input.
            let c = prep.channels
            var x = "pixels"
            var pre = Emitter(opset: options.opset)
            if prep.invert {
                pre.initializers.append(floatTensor("pixels_white", [], [255]))
                pre.node("Sub", ["pixels_white", x], ["pixels_inverted"], name: "preprocess_invert")
                x = "pixels_inverted"
            }
            pre.initializers.append(floatTensor("pixels_scale", [], [Float(prep.scale)]))
            pre.initializers.append(floatTensor("pixels_mean", [1, c, 1, 1], prep.mean))
            pre.initializers.append(floatTensor("pixels_std", [1, c, 1, 1], prep.std))
            pre.node("Mul", [x, "pixels_scale"], ["pixels_scaled"], name: "preprocess_scale")
            pre.node("Sub", ["pixels_scaled", "pixels_mean"], ["pixels_centred"], name: "preprocess_mean")
            pre.node("Div", ["pixels_centred", "pixels_std"], [g.inputs[0].name], name: "preprocess_std")
            graph.node = pre.nodes + graph.node
            graph.initializer = pre.initializers + graph.initializer
            input.name = "pixels"
        }
        graph.input = [input]
        var output = Onnx_ValueInfoProto()
        output.name = v(g.outputs[0])
        if options.outputActivation, g.outputKind != .none {
            let probabilities = "probabilities"
            if g.outputKind == .softmax {
                graph.node.append(makeNode("Softmax", [output.name], [probabilities], name: "output_softmax", attrs: [intAttr("axis", 1)]))
            } else {
                graph.node.append(makeNode("Sigmoid", [output.name], [probabilities], name: "output_sigmoid", attrs: []))
            }
            output.name = probabilities
        }
        let outShape =
            try g.stats(tensorShapes: model.tensorShapes, batch: 1).first { $0.node.outputs[0] == g.outputs[0] }?.outputShape ?? []
        output.type = tensorType([-1] + outShape.dropFirst(), dynamic: options.dynamicBatch)
        graph.output = [output]
        var m = Onnx_ModelProto()
        m.irVersion = 8
        m.producerName = "kdtool"
        m.producerVersion = kdtoolVersion
        var op = Onnx_OperatorSetIdProto()
        op.domain = ""
        op.version = Int64(options.opset)
        m.opsetImport = [op]
        if !e.functions.isEmpty {
            var k = Onnx_OperatorSetIdProto()
            k.domain = "kdtool"
            k.version = 1
            m.opsetImport.append(k)
            m.functions = e.functions
        }
        m.graph = graph
        var kind = Onnx_StringStringEntryProto()
        kind.key = "kdtool.output_kind"
        kind.value = g.outputKind.rawValue
        m.metadataProps = [kind]
        if let labels = model.labels {
            var l = Onnx_StringStringEntryProto()
            l.key = "kdtool.labels"
            l.value = labels.classes.joined(separator: "\n")
            m.metadataProps.append(l)
        }
        if let prep = model.preprocessing {
            for (key, value) in preprocessingProps(prep, inGraph: options.includePreprocessing) {
                var p = Onnx_StringStringEntryProto()
                p.key = key
                p.value = value
                m.metadataProps.append(p)
            }
        }
        return try [UInt8](m.serializedBytes() as Data)
    }

    /// The bundle's preprocessing as metadata_props: one JSON document (`kdtool.preprocessing`)
    /// for programs, and one sentence (`kdtool.input`) for people, so the exported file says what
    /// its input must be.
    public static func preprocessingProps(_ prep: Preprocessing, inGraph: Bool) -> [(String, String)] {
        func list(_ v: [Float]) -> String { "[" + v.map { "\($0)" }.joined(separator: ", ") + "]" }
        let json =
            "{\"layout\": \"NCHW\", \"channels\": \(prep.channels), \"height\": \(prep.height), \"width\": \(prep.width), "
            + "\"channel_order\": \"\(prep.channels == 3 ? "RGB" : prep.channels == 1 ? "gray" : "as stored")\", "
            + "\"resize\": \"\(prep.resize.rawValue)\", \"alpha\": \"\(prep.alpha.rawValue)\", \"invert\": \(prep.invert), "
            + "\"scale\": \(prep.scale), \"mean\": \(list(prep.mean)), \"std\": \(list(prep.std)), "
            + "\"normalization_in_graph\": \(inGraph)}"
        let resize = prep.resize == .stretch ? "stretched" : "resized on the shorter side and centre-cropped"
        let colour = prep.channels == 3 ? "RGB" : prep.channels == 1 ? "gray" : "\(prep.channels)-channel"
        let steps =
            inGraph
            ? "pixel values 0…255 (the graph normalises them)"
            : (prep.invert ? "x = 255 − pixel, then " : "x = pixel, then ")
                + "(x × \(abs(prep.scale * 255 - 1) < 1e-12 ? "1/255" : "\(prep.scale)") − mean) ÷ std per channel, "
                + "mean \(list(prep.mean)), std \(list(prep.std))"
        let sentence =
            "float32 N×\(prep.channels)×\(prep.height)×\(prep.width), \(colour), images \(resize) to \(prep.width)×\(prep.height) "
            + (prep.alpha == .drop ? "(alpha dropped)" : "(alpha composited on \(prep.alpha.rawValue))") + "; values: \(steps)"
        return [("kdtool.preprocessing", json), ("kdtool.input", sentence)]
    }

    static func tensorType(_ shape: [Int], dynamic: Bool) -> Onnx_TypeProto {
        var t = Onnx_TypeProto()
        var tt = Onnx_TypeProto.Tensor()
        tt.elemType = 1
        var s = Onnx_TensorShapeProto()
        s.dim = shape.enumerated().map { i, d in
            var dim = Onnx_TensorShapeProto.Dimension()
            if i == 0 && dynamic { dim.dimParam = "N" } else { dim.dimValue = Int64(i == 0 ? 1 : d) }
            return dim
        }
        tt.shape = s
        t.tensorType = tt
        return t
    }

    static func floatTensor(_ name: String, _ shape: [Int], _ values: [Float]) -> Onnx_TensorProto {
        var t = Onnx_TensorProto()
        t.name = name
        t.dataType = 1
        t.dims = shape.map(Int64.init)
        var raw = [UInt8]()
        raw.reserveCapacity(values.count * 4)
        for x in values { raw.appendLE(x.bitPattern) }
        t.rawData = Data(raw)
        return t
    }

    static func intAttr(_ name: String, _ v: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .int
        a.i = Int64(v)
        return a
    }
    static func intsAttr(_ name: String, _ v: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .ints
        a.ints = v.map(Int64.init)
        return a
    }
    static func floatAttr(_ name: String, _ v: Float) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .float
        a.f = v
        return a
    }

    struct Emitter {
        let opset: Int
        var nodes: [Onnx_NodeProto] = []
        var initializers: [Onnx_TensorProto] = []
        var functions: [Onnx_FunctionProto] = []

        mutating func node(
            _ op: String, _ ins: [String], _ outs: [String], name: String, attrs: [Onnx_AttributeProto] = [], domain: String = ""
        ) {
            nodes.append(OnnxExporter.makeNode(op, ins, outs, name: name, attrs: attrs, domain: domain))
        }
        /// An activation in its ONNX form (`Activation.onnx`): one op, Clip, or a decomposition.
        mutating func activation(_ f: Activation, _ x: String, _ out: String, name: String, opset: Int) throws {
            switch f.onnx {
            case .op(let type, let floats):
                if type == "HardSwish" && opset < 14 { throw InteropError("export", "HardSwish '\(name)' needs ONNX opset 14 or later") }
                node(type, [x], [out], name: name, attrs: floats.keys.sorted().map { OnnxExporter.floatAttr($0, floats[$0]!) })
            case .clip(let lo, let hi):
                node("Clip", [x, constant(name + "_min", [], [lo]), constant(name + "_max", [], [hi])], [out], name: name)
            case .silu:
                node("Sigmoid", [x], [name + "_sigmoid"], name: name + "_sigmoid")
                node("Mul", [x, name + "_sigmoid"], [out], name: name)
            case .gelu(let tanh) where opset >= 20:
                var a = Onnx_AttributeProto()
                a.name = "approximate"
                a.type = .string
                a.s = Data((tanh ? "tanh" : "none").utf8)
                node("Gelu", [x], [out], name: name, attrs: [a])
            case .gelu(false):
                // 0.5 · x · (1 + erf(x / √2))
                node("Div", [x, constant(name + "_sqrt2", [], [Float(2).squareRoot()])], [name + "_scaled"], name: name + "_div")
                node("Erf", [name + "_scaled"], [name + "_erf"], name: name + "_erf")
                node("Add", [name + "_erf", constant(name + "_one", [], [1])], [name + "_cdf2"], name: name + "_add")
                node("Mul", [x, name + "_cdf2"], [name + "_prod"], name: name + "_mul")
                node("Mul", [name + "_prod", constant(name + "_half", [], [0.5])], [out], name: name)
            case .gelu(true):
                // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
                node("Mul", [x, x], [name + "_x2"], name: name + "_sq")
                node("Mul", [name + "_x2", x], [name + "_x3"], name: name + "_cube")
                node("Mul", [name + "_x3", constant(name + "_c", [], [0.044715])], [name + "_cx3"], name: name + "_scale3")
                node("Add", [x, name + "_cx3"], [name + "_inner"], name: name + "_inner")
                node("Mul", [name + "_inner", constant(name + "_k", [], [0.7978845608])], [name + "_u"], name: name + "_scale")
                node("Tanh", [name + "_u"], [name + "_t"], name: name + "_tanh")
                node("Add", [name + "_t", constant(name + "_one", [], [1])], [name + "_t1"], name: name + "_add")
                node("Mul", [x, name + "_t1"], [name + "_prod"], name: name + "_mul")
                node("Mul", [name + "_prod", constant(name + "_half", [], [0.5])], [out], name: name)
            }
        }

        mutating func constant(_ name: String, _ shape: [Int], _ v: [Float]) -> String {
            initializers.append(OnnxExporter.floatTensor(name, shape, v))
            return name
        }
        mutating func intConstant(_ name: String, _ v: [Int64]) -> String {
            var t = Onnx_TensorProto()
            t.name = name
            t.dataType = 7
            t.dims = [Int64(v.count)]
            t.int64Data = v
            initializers.append(t)
            return name
        }

        /// One function per node (its slices are baked in): x, then W_k, b_k for each block.
        mutating func splitLinear(_ node: Graph.Node, _ ins: [String], model: Model) {
            let splits = node.ints("in_splits")
            let shared = node.int("shared")
            let total = splits.reduce(0, +) + shared
            var body: [Onnx_NodeProto] = []
            var consts: [(String, [Int64])] = []
            func c(_ name: String, _ v: [Int64]) -> String {
                consts.append((name, v))
                return name
            }
            let axis = c("axis1", [1])
            var outs: [String] = []
            var start = 0
            for (k, s) in splits.enumerated() {
                let own = "x\(k)"
                body.append(
                    OnnxExporter.makeNode(
                        "Slice", ["x", c("s\(k)", [Int64(start)]), c("e\(k)", [Int64(start + s)]), axis], [own], name: "slice\(k)"))
                var input = own
                if shared > 0 {
                    if k == 0 {
                        body.append(
                            OnnxExporter.makeNode(
                                "Slice", ["x", c("ss", [Int64(total - shared)]), c("se", [Int64(total)]), axis], ["xs"],
                                name: "slice_shared"))
                    }
                    input = "xc\(k)"
                    body.append(
                        OnnxExporter.makeNode("Concat", [own, "xs"], [input], name: "concat\(k)", attrs: [OnnxExporter.intAttr("axis", 1)]))
                }
                body.append(
                    OnnxExporter.makeNode(
                        "Gemm", [input, "w\(k)", "b\(k)"], ["y\(k)"], name: "gemm\(k)", attrs: [OnnxExporter.intAttr("transB", 1)]))
                outs.append("y\(k)")
                start += s
            }
            body.append(OnnxExporter.makeNode("Concat", outs, ["y"], name: "concat", attrs: [OnnxExporter.intAttr("axis", 1)]))
            let constNodes = consts.map { OnnxExporter.constantNode($0.0, ints: $0.1) }
            var f = Onnx_FunctionProto()
            f.name = "SplitLinear_" + OnnxExporter.sanitize(node.name)
            f.domain = "kdtool"
            f.input = ["x"] + splits.indices.flatMap { ["w\($0)", "b\($0)"] }
            f.output = ["y"]
            f.node = constNodes + body
            var op = Onnx_OperatorSetIdProto()
            op.version = Int64(opset)
            f.opsetImport = [op]
            f.docString = "kdtool split_linear in_splits=\(splits.map(String.init).joined(separator: ",")) shared=\(shared)"
            functions.append(f)
            self.node(f.name, ins, node.outputs, name: node.name, domain: "kdtool")
        }

        /// Per group: Slice, then (groups of one pass through) ReduceL2 → Max(ε) → Div → Mul(γ); Concat.
        mutating func l2normScale(_ node: Graph.Node, _ ins: [String], model: Model) throws {
            let groups = node.ints("groups")
            let eps = Float(node.float("epsilon"))
            guard let gamma = model.parameters[node.inputs[1]] else {
                throw InteropError("export", "l2norm_scale '\(node.name)' has no gamma tensor")
            }
            let perFeature = gamma.count == groups.reduce(0, +)
            var body: [Onnx_NodeProto] = []
            var consts: [Onnx_NodeProto] = []
            func c(_ name: String, _ v: [Int64]) -> String {
                consts.append(OnnxExporter.constantNode(name, ints: v))
                return name
            }
            func cf(_ name: String, _ v: Float) -> String {
                consts.append(OnnxExporter.constantNode(name, tensor: OnnxExporter.floatTensor("", [], [v])))
                return name
            }
            let axis = c("axis1", [1])
            let epsName = cf("eps", eps)
            var outs: [String] = []
            var start = 0
            for (k, size) in groups.enumerated() {
                let xk = "x\(k)"
                body.append(
                    OnnxExporter.makeNode(
                        "Slice", ["x", c("s\(k)", [Int64(start)]), c("e\(k)", [Int64(start + size)]), axis], [xk], name: "slice\(k)"))
                if size == 1 {
                    outs.append(xk)
                } else {
                    let reduce =
                        opset >= 18
                        ? OnnxExporter.makeNode(
                            "ReduceL2", [xk, axis], ["n\(k)"], name: "norm\(k)", attrs: [OnnxExporter.intAttr("keepdims", 1)])
                        : OnnxExporter.makeNode(
                            "ReduceL2", [xk], ["n\(k)"], name: "norm\(k)",
                            attrs: [OnnxExporter.intsAttr("axes", [1]), OnnxExporter.intAttr("keepdims", 1)])
                    body.append(reduce)
                    body.append(OnnxExporter.makeNode("Max", ["n\(k)", epsName], ["m\(k)"], name: "clip\(k)"))
                    body.append(OnnxExporter.makeNode("Div", [xk, "m\(k)"], ["u\(k)"], name: "div\(k)"))
                    let gk = "g\(k)"
                    if perFeature {
                        body.append(
                            OnnxExporter.makeNode(
                                "Slice", ["gamma", c("gs\(k)", [Int64(start)]), c("ge\(k)", [Int64(start + size)]), c("ax0_\(k)", [0])],
                                [gk], name: "gslice\(k)"))
                    } else {
                        body.append(
                            OnnxExporter.makeNode(
                                "Slice", ["gamma", c("gs\(k)", [Int64(k)]), c("ge\(k)", [Int64(k + 1)]), c("ax0_\(k)", [0])], [gk],
                                name: "gslice\(k)"))
                    }
                    body.append(OnnxExporter.makeNode("Mul", ["u\(k)", gk], ["y\(k)"], name: "scale\(k)"))
                    outs.append("y\(k)")
                }
                start += size
            }
            body.append(OnnxExporter.makeNode("Concat", outs, ["y"], name: "concat", attrs: [OnnxExporter.intAttr("axis", 1)]))
            var f = Onnx_FunctionProto()
            f.name = "L2NormScale_" + OnnxExporter.sanitize(node.name)
            f.domain = "kdtool"
            f.input = ["x", "gamma"]
            f.output = ["y"]
            f.node = consts + body
            var op = Onnx_OperatorSetIdProto()
            op.version = Int64(opset)
            f.opsetImport = [op]
            f.docString = "kdtool l2norm_scale groups=\(groups.map(String.init).joined(separator: ",")) epsilon=\(node.float("epsilon"))"
            functions.append(f)
            self.node(f.name, ins, node.outputs, name: node.name, domain: "kdtool")
        }
    }

    static func makeNode(
        _ op: String, _ ins: [String], _ outs: [String], name: String, attrs: [Onnx_AttributeProto] = [], domain: String = ""
    ) -> Onnx_NodeProto {
        var n = Onnx_NodeProto()
        n.opType = op
        n.input = ins
        n.output = outs
        n.name = name
        n.attribute = attrs
        if !domain.isEmpty { n.domain = domain }
        return n
    }

    /// A Constant node holding `tensor` (or a 1-D int64 tensor of `ints`).
    static func constantNode(_ name: String, tensor: Onnx_TensorProto) -> Onnx_NodeProto {
        var a = Onnx_AttributeProto()
        a.name = "value"
        a.type = .tensor
        a.t = tensor
        return makeNode("Constant", [], [name], name: "const_" + name, attrs: [a])
    }

    static func constantNode(_ name: String, ints v: [Int64]) -> Onnx_NodeProto {
        var t = Onnx_TensorProto()
        t.dataType = 7
        t.dims = [Int64(v.count)]
        t.int64Data = v
        return constantNode(name, tensor: t)
    }

    static func sanitize(_ s: String) -> String {
        String(s.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" })
    }
}
