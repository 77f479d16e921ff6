import KDTensor

/// `GRPH`: the model as a DAG of nodes from a closed op set (Spec §7.2).
///
///     let g = Graph(inputs: [.init(name: "x", shape: [-1, 784])], outputs: ["logits"], outputKind: .softmax,
///                   nodes: [Graph.Node(name: "fc", op: .linear, inputs: ["x", "fc.weight", "fc.bias"], outputs: ["logits"])])
public struct Graph: BundleSection {
    public static let fourcc = "GRPH"
    /// The newest op set this reader knows; a graph is written with the lowest op set that has its ops.
    public static let opset = 2

    /// The op set a graph needs: 2 when it uses an op-set-2 op, else 1 (so op-set-1 graphs stay byte-identical).
    public var requiredOpset: Int { nodes.map(\.op.opset).max() ?? 1 }

    public enum OutputKind: String, Sendable, CaseIterable { case softmax, sigmoid, none }

    /// An op of the closed op set (Spec §7.2): the structural ops by name, and the elementwise
    /// activations of `KDTensor.Activation` (op set 2), each under its own name.
    public enum Op: Hashable, Sendable, CaseIterable, RawRepresentable {
        case conv2d, linear, batchnorm, relu, maxpool, avgpool, globalavgpool, add, concat, flatten, reshape
        case dropout, softmax, sigmoid
        case splitLinear
        case l2normScale
        // Op set 2.
        case mul, sub, div
        case reduceMean
        case transpose, pad, slice, layernorm
        case activation(Activation.Kind)

        static let structural: [Op] = [
            .conv2d, .linear, .batchnorm, .relu, .maxpool, .avgpool, .globalavgpool, .add, .concat, .flatten, .reshape, .dropout,
            .softmax, .sigmoid, .splitLinear, .l2normScale, .mul, .sub, .div, .reduceMean, .transpose, .pad, .slice, .layernorm,
        ]
        public static var allCases: [Op] { structural + Activation.Kind.allCases.map { .activation($0) } }

        public init?(rawValue: String) {
            if let k = Activation.Kind(rawValue: rawValue) {
                self = .activation(k)
                return
            }
            guard let op = Op.structural.first(where: { $0.rawValue == rawValue }) else { return nil }
            self = op
        }

        public var rawValue: String {
            switch self {
            case .conv2d: "conv2d"
            case .linear: "linear"
            case .batchnorm: "batchnorm"
            case .relu: "relu"
            case .maxpool: "maxpool"
            case .avgpool: "avgpool"
            case .globalavgpool: "globalavgpool"
            case .add: "add"
            case .concat: "concat"
            case .flatten: "flatten"
            case .reshape: "reshape"
            case .dropout: "dropout"
            case .softmax: "softmax"
            case .sigmoid: "sigmoid"
            case .splitLinear: "split_linear"
            case .l2normScale: "l2norm_scale"
            case .mul: "mul"
            case .sub: "sub"
            case .div: "div"
            case .reduceMean: "reduce_mean"
            case .transpose: "transpose"
            case .pad: "pad"
            case .slice: "slice"
            case .layernorm: "layernorm"
            case .activation(let k): k.rawValue
            }
        }

        /// The op set that introduced the op: 1 for the original set, 2 for the ops real
        /// classifiers exported from PyTorch need. A graph using only op-set-1 ops is written as op set 1.
        public var opset: Int {
            switch self {
            case .mul, .sub, .div, .reduceMean, .transpose, .pad, .slice, .layernorm, .activation: 2
            default: 1
            }
        }
    }

    public struct Input: Equatable, Sendable {
        public var name: String
        /// `-1` in position 0 means any batch size.
        public var shape: [Int]
        public init(name: String, shape: [Int]) {
            self.name = name
            self.shape = shape
        }
    }

    public struct Node: Equatable, Sendable {
        public var name: String
        public var op: Op
        public var inputs: [String]
        public var outputs: [String]
        public var attrs: [String: Value]
        public init(name: String, op: Op, inputs: [String], outputs: [String], attrs: [String: Value] = [:]) {
            self.name = name
            self.op = op
            self.inputs = inputs
            self.outputs = outputs
            self.attrs = attrs
        }

        public func ints(_ key: String) -> [Int] {
            if case .ints(let v) = attrs[key] { return v.map { Int(clamping: $0) } }
            return []
        }
        public func int(_ key: String) -> Int {
            switch attrs[key] {
            case .int(let v): Int(clamping: v)
            case .uint(let v): Int(clamping: v)
            default: 0
            }
        }
        public func float(_ key: String) -> Double {
            if case .float(let v) = attrs[key] { return v }
            return 0
        }
        public func bool(_ key: String) -> Bool {
            if case .bool(let v) = attrs[key] { return v }
            return false
        }
        /// The activation an activation node computes (nil for other ops).
        public var activation: Activation? { op.activation(self) }

        /// An activation node.
        public init(name: String, activation f: Activation, input: String, output: String) {
            var attrs: [String: Value] = [:]
            for (k, v) in f.floatAttributes { attrs[k] = .float(Double("\(v)") ?? Double(v)) }
            for (k, v) in f.boolAttributes { attrs[k] = .bool(v) }
            self.init(name: name, op: .activation(f.kind), inputs: [input], outputs: [output], attrs: attrs)
        }
    }

    public var inputs: [Input]
    public var outputs: [String]
    public var outputKind: OutputKind
    public var nodes: [Node]

    public init(inputs: [Input], outputs: [String], outputKind: OutputKind, nodes: [Node]) {
        self.inputs = inputs
        self.outputs = outputs
        self.outputKind = outputKind
        self.nodes = nodes
    }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        inputs = try f.records("inputs") { r in
            let name = try r.string("name")
            let shape = try r.ints("shape")
            guard shape.count <= Format.maxRank else {
                throw BundleError(.rankTooLarge, offset: offset, "GRPH input '\(name)' has rank \(shape.count) > 8")
            }
            for (i, d) in shape.enumerated() where d < 0 && !(i == 0 && d == -1) {
                throw r.invalid("shape", "dimension \(i) of input '\(name)' is \(d)")
            }
            return Input(name: name, shape: shape.map { Int(clamping: $0) })
        }
        nodes = try f.records("nodes") { r in
            let attrs = try r.map("attrs")
            let ins = try r.strings("inputs")
            let name = try r.string("name")
            let opName = try r.string("op")
            guard let op = Op(rawValue: opName) else {
                throw BundleError(.unknownOp, offset: offset, "GRPH node '\(name)' has op '\(opName)', not in op sets 1–\(Graph.opset)")
            }
            return Node(name: name, op: op, inputs: ins, outputs: try r.strings("outputs"), attrs: attrs)
        }
        let opset = try f.uint("opset")
        guard (1...Graph.opset).contains(opset) else {
            throw f.invalid("opset", "op set \(opset) is not supported (1–\(Graph.opset))")
        }
        if let newer = nodes.first(where: { $0.op.opset > opset }) {
            throw f.invalid(
                "opset",
                "node '\(newer.name)' has op '\(newer.op.rawValue)' of op set \(newer.op.opset), but the graph says op set \(opset)")
        }
        let kind = try f.string("output_kind")
        guard let k = OutputKind(rawValue: kind) else {
            throw f.invalid("output_kind", "'\(kind)' is not softmax|sigmoid|none")
        }
        outputKind = k
        outputs = try f.strings("outputs")
        try f.finish()
    }

    public var value: Value {
        .map([
            "inputs": .array(inputs.map { .map(["name": .string($0.name), "shape": .ints($0.shape.map(Int64.init))]) }),
            "nodes": .array(
                nodes.map {
                    .map([
                        "attrs": .map($0.attrs), "inputs": .array($0.inputs.map { .string($0) }),
                        "name": .string($0.name), "op": .string($0.op.rawValue),
                        "outputs": .array($0.outputs.map { .string($0) }),
                    ])
                }),
            "opset": .uint(UInt64(requiredOpset)),
            "output_kind": .string(outputKind.rawValue),
            "outputs": .array(outputs.map { .string($0) }),
        ])
    }

    public func node(named name: String) -> Node? { nodes.first { $0.name == name } }
}

// MARK: - Op schema and validation

extension Graph.Op {
    enum AttrKind {
        case ints(count: Int?, min: Int64)
        case uint(min: UInt64)
        case int
        case float(ClosedRange<Double>, openUpper: Bool)
        case bool
    }

    /// Allowed input counts and the exact attribute set (Spec §7.2 table).
    var schema: (inputs: ClosedRange<Int>, attrs: [String: AttrKind]) {
        let window: [String: AttrKind] = [
            "kernel": .ints(count: 2, min: 1), "stride": .ints(count: 2, min: 1), "pads": .ints(count: 4, min: 0),
        ]
        switch self {
        case .conv2d:
            return (
                2...3,
                [
                    "stride": .ints(count: 2, min: 1), "pads": .ints(count: 4, min: 0),
                    "dilation": .ints(count: 2, min: 1), "groups": .uint(min: 1),
                ]
            )
        case .linear: return (2...3, [:])
        case .batchnorm:
            return (
                5...5,
                [
                    "epsilon": .float(Double.leastNonzeroMagnitude...Double.greatestFiniteMagnitude, openUpper: false),
                    "momentum": .float(0...1, openUpper: false),
                ]
            )
        case .relu, .sigmoid, .globalavgpool: return (1...1, [:])
        case .maxpool:
            return (1...1, window.merging(["dilation": .ints(count: 2, min: 1), "ceil_mode": .bool]) { a, _ in a })
        case .avgpool:
            return (1...1, window.merging(["ceil_mode": .bool, "count_include_pad": .bool]) { a, _ in a })
        case .add: return (2...2, [:])
        case .concat: return (1...Int.max, ["axis": .int])
        case .flatten: return (1...1, ["axis": .int])
        case .reshape: return (1...1, ["shape": .ints(count: nil, min: -1)])
        case .dropout: return (1...1, ["ratio": .float(0...1, openUpper: true)])
        case .softmax: return (1...1, ["axis": .int])
        case .splitLinear: return (3...Int.max, ["in_splits": .ints(count: nil, min: 0), "shared": .uint(min: 0)])
        case .l2normScale:
            return (
                2...2,
                [
                    "groups": .ints(count: nil, min: 1),
                    "epsilon": .float(Double.leastNonzeroMagnitude...Double.greatestFiniteMagnitude, openUpper: false),
                ]
            )
        case .mul, .sub, .div: return (2...2, [:])
        case .reduceMean: return (1...1, ["axes": .ints(count: nil, min: -Int64(Format.maxRank)), "keepdims": .bool])
        case .transpose: return (1...1, ["perm": .ints(count: nil, min: 0)])
        case .pad: return (1...1, ["pads": .ints(count: nil, min: 0), "value": .float(Graph.Op.finite, openUpper: false)])
        case .slice:
            return (
                1...1,
                [
                    "axes": .ints(count: nil, min: -Int64(Format.maxRank)), "starts": .ints(count: nil, min: Int64.min),
                    "ends": .ints(count: nil, min: Int64.min),
                ]
            )
        case .layernorm:
            return (
                2...3,
                [
                    "axis": .int,
                    "epsilon": .float(Double.leastNonzeroMagnitude...Double.greatestFiniteMagnitude, openUpper: false),
                ]
            )
        case .activation(let kind):
            var attrs: [String: AttrKind] = [:]
            for a in Activation.attributes(of: kind) { attrs[a.name] = a.range.map { .float($0, openUpper: false) } ?? .bool }
            return (1...1, attrs)
        }
    }

    static let finite = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude

    /// The activation a node of an activation op computes (its attributes read); nil for other ops
    /// or attributes that do not describe one (a clip with min > max).
    public func activation(_ node: Graph.Node) -> Activation? {
        guard case .activation(let kind) = self else { return nil }
        var floats: [String: Double] = [:]
        var bools: [String: Bool] = [:]
        for (k, v) in node.attrs {
            if case .float(let f) = v { floats[k] = f }
            if case .bool(let b) = v { bools[k] = b }
        }
        return Activation(kind: kind, floats: floats, bools: bools)
    }
}

extension Graph {
    /// Structural checks against the tensor table (Spec §7.2): arity, attributes, names, missing
    /// tensors, unproduced outputs and cycles. Returns the nodes in a topological order.
    @discardableResult
    public func validate(tensorNames: Set<String>, offset: Int? = nil) throws -> [Node] {
        func fail(_ code: BundleErrorCode, _ m: String) -> BundleError { BundleError(code, offset: offset, "GRPH: \(m)") }

        var nodeNames = Set<String>()
        var producer: [String: Int] = [:]
        var available = tensorNames
        for input in inputs {
            guard !input.name.isEmpty else { throw fail(.invalidField, "graph input names must not be empty") }
            guard available.insert(input.name).inserted else {
                throw fail(.duplicateName, "graph input '\(input.name)' is also a tensor or another input")
            }
        }
        for (i, node) in nodes.enumerated() {
            guard !node.name.isEmpty, !node.outputs.contains("") else {
                throw fail(.invalidField, "node \(i) has an empty name or output name")
            }
            guard nodeNames.insert(node.name).inserted else { throw fail(.duplicateName, "node name '\(node.name)' repeats") }
            try checkNode(node, fail: fail)
            for out in node.outputs {
                guard !available.contains(out), producer[out] == nil else {
                    throw fail(.duplicateName, "node '\(node.name)' output '\(out)' is already defined")
                }
                producer[out] = i
            }
        }
        for node in nodes {
            for input in node.inputs where !available.contains(input) && producer[input] == nil {
                throw fail(.missingTensor, "node '\(node.name)' reads '\(input)', which no input, tensor or node provides")
            }
        }
        for out in outputs where producer[out] == nil {
            throw fail(
                .invalidGraph,
                available.contains(out)
                    ? "graph output '\(out)' is a graph input or a stored tensor; outputs must be node outputs"
                    : "graph output '\(out)' is not produced by any node")
        }
        // Kahn's algorithm: whatever is left unordered sits on a cycle.
        var indegree = [Int](repeating: 0, count: nodes.count)
        var consumers = [[Int]](repeating: [], count: nodes.count)
        for (i, node) in nodes.enumerated() {
            for input in node.inputs {
                if let p = producer[input] {
                    indegree[i] += 1
                    consumers[p].append(i)
                }
            }
        }
        var ready = (0..<nodes.count).filter { indegree[$0] == 0 }
        var order: [Node] = []
        var head = 0
        while head < ready.count {
            let i = ready[head]
            head += 1
            order.append(nodes[i])
            for c in consumers[i] {
                indegree[c] -= 1
                if indegree[c] == 0 { ready.append(c) }
            }
        }
        if order.count != nodes.count {
            let stuck = nodes.indices.filter { indegree[$0] > 0 }.map { nodes[$0].name }
            throw fail(.graphCycle, "nodes \(stuck.prefix(5).joined(separator: ", ")) form a cycle")
        }
        return order
    }

    func checkNode(_ node: Node, fail: (BundleErrorCode, String) -> BundleError) throws {
        let schema = node.op.schema
        guard schema.inputs.contains(node.inputs.count) else {
            throw fail(.invalidGraph, "node '\(node.name)' (\(node.op.rawValue)) has \(node.inputs.count) inputs")
        }
        guard node.outputs.count == 1 else {
            throw fail(.invalidGraph, "node '\(node.name)' must have exactly one output, has \(node.outputs.count)")
        }
        for key in Value.canonicalOrder(node.attrs.keys) where schema.attrs[key] == nil {
            throw fail(.invalidGraph, "node '\(node.name)' (\(node.op.rawValue)) has unknown attribute '\(key)'")
        }
        for (key, kind) in schema.attrs {
            guard let v = node.attrs[key] else {
                throw fail(.invalidGraph, "node '\(node.name)' (\(node.op.rawValue)) lacks attribute '\(key)'")
            }
            let ok: Bool
            switch (kind, v) {
            case (.ints(let count, let min), .ints(let xs)):
                ok = (count.map { xs.count == $0 } ?? true) && xs.allSatisfy { $0 >= min }
            case (.uint(let min), .uint(let x)): ok = x >= min
            case (.int, .int): ok = true
            case (.float(let range, let openUpper), .float(let x)):
                ok = range.contains(x) && !(openUpper && x == range.upperBound)
            case (.bool, .bool): ok = true
            default: ok = false
            }
            guard ok else { throw fail(.invalidGraph, "node '\(node.name)' attribute '\(key)' is invalid: \(v)") }
        }
        if node.op == .splitLinear {
            let k = node.ints("in_splits").count
            guard k >= 1, node.inputs.count == 1 + 2 * k else {
                throw fail(
                    .invalidGraph, "split_linear '\(node.name)' needs 1 + 2×\(k) inputs, has \(node.inputs.count)")
            }
        }
    }
}
