import KDBundle
import KDTensor

extension Model {
    /// What one forward pass produced on the tape.
    public struct Forward {
        public let tape: Tape
        /// Every tensor name (graph inputs, node outputs, parameters) to its tape value.
        public let values: [String: Var]
        public let output: Var
        public func parameter(_ name: String) -> Var? { values[name] }
    }

    /// Runs the graph on `x`. With `training`, batch norm uses batch statistics (and updates the
    /// running ones) and dropout draws masks from `rng`; trainable parameters get gradients when
    /// the tape records.
    ///
    /// `fusing` (the names a caller will read, e.g. an objective's) lets a batch norm or an
    /// addition and the ReLU that alone reads it run as one op: the tensor between them then has
    /// no value, unless it is one of those names. Without it every node's output has its value.
    public func forward(_ x: Tensor, training: Bool, tape: Tape, rng: inout RandomSource, fusing keep: Set<String>? = nil) throws
        -> Forward
    {
        var values: [String: Var] = [:]
        let expected = graph.inputs[0].shape
        guard x.rank == expected.count, zip(x.shape.dropFirst(), expected.dropFirst()).allSatisfy({ $0 == $1 }) else {
            throw NNError("input \(x.shape) does not match the model input \(expected) (first dimension is the batch)", code: .dataMismatch)
        }
        try checkBatchFits(x.shape[0])
        guard activationQuant.isEmpty || !tape.recording else {
            throw NNError("a bundle with quantized activations runs for inference only; train its fp32 original")
        }
        values[graph.inputs[0].name] = tape.leaf(activationQuant[graph.inputs[0].name].map { $0.applied(to: x) } ?? x)
        for (name, t) in parameters { values[name] = tape.leaf(t, requiresGrad: tape.recording && !frozen.contains(name)) }
        let groups = Lowering(self, keeping: keep).groups
        // Channel ops as gathers of blocked values, where the tape runs blocked and fuses.
        let channels =
            keep.flatMap { keep in
                tape.blocked && Conv2d.useFast && activationQuant.isEmpty ? channelPlan(keep: keep, groups: groups) : nil
            }
        for group in groups {
            if let channels, group.nodes.count == 1 {
                if channels.absorbed.contains(group.anchor.name) { continue }
                if let gather = channels.gathers[group.anchor.name] {
                    if channels.needed.contains(gather.output) {
                        let inputs = try gather.inputs.map { name in
                            guard let v = values[name] else {
                                throw NNError("gather '\(group.anchor.name)' reads '\(name)', which has no value")
                            }
                            return v
                        }
                        values[gather.output] = try Profiler.measure("forward gather") { try tape.gatherChannels(inputs, gather.sources) }
                    }
                    continue
                }
            }
            if group.nodes.count == 1 {
                let node = group.anchor
                var out = try Profiler.measure("forward \(node.op.rawValue)") {
                    try apply(node, tape: tape, values: values, training: training, rng: &rng)
                }
                if let q = activationQuant[node.outputs[0]] { out = tape.leaf(q.applied(to: tape.value(out))) }
                values[node.outputs[0]] = out
                continue
            }
            try run(group, tape: tape, values: &values, training: training, rng: &rng)
        }
        guard let output = values[graph.outputs[0]] else { throw NNError("graph output '\(graph.outputs[0])' was not computed") }
        return Forward(tape: tape, values: values, output: output)
    }

    /// A group's nodes on the tape, with the fusions the tape has: batch norm + ReLU, batch norm
    /// + add + ReLU, add + ReLU (the values between them then have none); the rest one by one.
    /// Nothing inside a group is rounded to an activation grid (Lowering leaves those out).
    func run(_ group: Lowering.Group, tape: Tape, values: inout [String: Var], training: Bool, rng: inout RandomSource) throws {
        let nodes = group.nodes
        func op(_ i: Int) -> Graph.Op? { i < nodes.count ? nodes[i].op : nil }
        var i = 0
        while i < nodes.count {
            let node = nodes[i]
            // ReLU6 (clip(0, u)) after a batch norm fuses as ReLU does, with its upper bound.
            var upper = Float.infinity
            if node.op == .batchnorm, i + 1 < nodes.count, case .clip(let lo, let hi)? = nodes[i + 1].activation, lo == 0, hi > 0 {
                upper = hi
            }
            // How many nodes the tape runs as one op from here.
            let span =
                node.op == .batchnorm && (op(i + 1) == .relu || upper.isFinite)
                ? 2
                : node.op == .batchnorm && op(i + 1) == .add && op(i + 2) == .relu ? 3 : node.op == .add && op(i + 1) == .relu ? 2 : 1
            let label = nodes[i..<(i + span)].map(\.op.rawValue).joined(separator: "+")
            let out: Var = try Profiler.measure("forward \(label)") {
                func input(_ k: Int) throws -> Var {
                    if let v = values[node.inputs[k]] { return v }
                    throw NNError("node '\(node.name)' reads '\(node.inputs[k])', which has no value")
                }
                switch (node.op, span) {
                case (.add, 2): return try tape.addRelu(try input(0), try input(1))
                case (.batchnorm, 2...):
                    guard let mean = buffers[node.inputs[3]], let variance = buffers[node.inputs[4]] else {
                        throw NNError("batchnorm '\(node.name)' has no running statistics")
                    }
                    let (x, scale, bias) = (try input(0), try input(1), try input(2))
                    let (epsilon, momentum) = (Float(node.float("epsilon")), Float(node.float("momentum")))
                    if span == 2 {
                        return try tape.batchnormRelu(
                            x, scale: scale, bias: bias, runningMean: mean, runningVar: variance, epsilon: epsilon, momentum: momentum,
                            training: training, upper: upper)
                    }
                    guard let residual = group.residual, let r = values[residual] else {
                        throw NNError("node '\(nodes[i + 1].name)' reads a value that has none")
                    }
                    return try tape.batchnormAddRelu(
                        x, scale: scale, bias: bias, runningMean: mean, runningVar: variance, epsilon: epsilon, momentum: momentum,
                        training: training, residual: r)
                default: return try apply(node, tape: tape, values: values, training: training, rng: &rng)
                }
            }
            i += span
            values[nodes[i - 1].outputs[0]] = out
        }
        if let q = activationQuant[group.output], let v = values[group.output] {
            values[group.output] = tape.leaf(q.applied(to: tape.value(v)))
        }
    }

    /// One node's forward on the tape (shared by training, evaluation and the inference plan).
    func apply(_ node: Graph.Node, tape: Tape, values: [String: Var], training: Bool, rng: inout RandomSource) throws -> Var {
        func input(_ i: Int) throws -> Var {
            let name = node.inputs[i]
            if let v = values[name] { return v }
            throw NNError("node '\(node.name)' reads '\(name)', which has no value")
        }
        let out: Var
        switch node.op {
        case .conv2d:
            let w = tape.value(try input(1)).shape
            let g = Window(
                kernel: [w[2], w[3]], stride: node.ints("stride"), pads: node.ints("pads"), dilation: node.ints("dilation"))
            out = try tape.conv2d(
                try input(0), try input(1), node.inputs.count > 2 ? try input(2) : nil, g, groups: node.int("groups"))
        case .linear:
            out = try tape.linear(try input(0), try input(1), node.inputs.count > 2 ? try input(2) : nil)
        case .batchnorm:
            guard let mean = buffers[node.inputs[3]], let variance = buffers[node.inputs[4]] else {
                throw NNError("batchnorm '\(node.name)' has no running statistics")
            }
            out = try tape.batchnorm(
                try input(0), scale: try input(1), bias: try input(2), runningMean: mean, runningVar: variance,
                epsilon: Float(node.float("epsilon")), momentum: Float(node.float("momentum")), training: training)
        case .relu: out = tape.relu(try input(0))
        case .sigmoid: out = tape.sigmoid(try input(0))
        case .maxpool:
            out = try tape.maxpool(
                try input(0),
                Window(
                    kernel: node.ints("kernel"), stride: node.ints("stride"), pads: node.ints("pads"),
                    dilation: node.ints("dilation"),
                    ceilMode: node.bool("ceil_mode")))
        case .avgpool:
            out = try tape.avgpool(
                try input(0),
                Window(
                    kernel: node.ints("kernel"), stride: node.ints("stride"), pads: node.ints("pads"),
                    ceilMode: node.bool("ceil_mode")),
                countIncludePad: node.bool("count_include_pad"))
        case .globalavgpool: out = try tape.globalAvgPool(try input(0))
        case .add: out = try tape.add(try input(0), try input(1))
        case .concat: out = try tape.concat(try node.inputs.indices.map(input), axis: node.int("axis"))
        case .flatten:
            let s = tape.value(try input(0)).shape
            let axis = node.int("axis") < 0 ? node.int("axis") + s.count : node.int("axis")
            out = try tape.reshape(try input(0), [s[..<axis].reduce(1, *), s[axis...].reduce(1, *)])
        case .reshape:
            out = try tape.reshape(try input(0), try Model.resolveReshape(tape.value(try input(0)).shape, node.ints("shape")))
        case .dropout:
            out = tape.dropout(try input(0), ratio: Float(node.float("ratio")), training: training, rng: &rng)
        case .softmax:
            let r = tape.value(try input(0)).rank
            guard node.int("axis") == -1 || node.int("axis") == r - 1 else {
                throw NNError("softmax '\(node.name)' over axis \(node.int("axis")) is not supported (last axis only)")
            }
            out = tape.softmax(try input(0))
        case .splitLinear:
            let k = node.ints("in_splits").count
            let blocks = try (0..<k).map { (w: try input(1 + 2 * $0), b: try input(2 + 2 * $0)) }
            out = try tape.splitLinear(try input(0), blocks: blocks, inSplits: node.ints("in_splits"), shared: node.int("shared"))
        case .l2normScale:
            out = try tape.l2normScale(
                try input(0), gamma: try input(1), groups: node.ints("groups"), epsilon: Float(node.float("epsilon")))
        case .mul, .sub, .div:
            let op: Broadcast.Op = node.op == .mul ? .mul : node.op == .sub ? .sub : .div
            out = try tape.broadcast(op, try input(0), try input(1))
        case .reduceMean:
            let rank = tape.shape(try input(0)).count
            let axes = node.ints("axes").map { $0 < 0 ? $0 + rank : $0 }
            out = tape.reduceMean(try input(0), axes: axes, keepdims: node.bool("keepdims"))
        case .transpose: out = tape.transpose(try input(0), perm: node.ints("perm"))
        case .pad: out = tape.pad(try input(0), pads: node.ints("pads"), value: Float(node.float("value")))
        case .slice:
            let s = tape.shape(try input(0))
            var ranges = s.map { 0..<$0 }
            let (starts, ends) = (node.ints("starts"), node.ints("ends"))
            for (k, a) in node.ints("axes").enumerated() {
                let axis = a < 0 ? a + s.count : a
                ranges[axis] = Shaping.sliceRange(start: starts[k], end: ends[k], size: s[axis])
            }
            out = tape.slice(try input(0), ranges: ranges)
        case .layernorm:
            let rank = tape.shape(try input(0)).count
            let axis = node.int("axis") < 0 ? node.int("axis") + rank : node.int("axis")
            out = try tape.layerNorm(
                try input(0), scale: try input(1), bias: node.inputs.count > 2 ? try input(2) : nil, axis: axis,
                epsilon: Float(node.float("epsilon")))
        case .activation:
            guard let f = node.activation else { throw NNError("node '\(node.name)' has attributes that describe no \(node.op.rawValue)") }
            out = tape.activation(try input(0), f)
        }
        return out
    }

    /// ONNX Reshape semantics: 0 copies the input dimension, one −1 is inferred.
    static func resolveReshape(_ input: [Int], _ target: [Int]) throws -> [Int] {
        var shape = target.enumerated().map { i, d in d == 0 && i < input.count ? input[i] : d }
        let count = input.reduce(1, *)
        if let free = shape.firstIndex(of: -1) {
            let known = shape.filter { $0 != -1 }.reduce(1, *)
            guard known > 0, count % known == 0 else { throw NNError("cannot reshape \(input) to \(target)") }
            shape[free] = count / known
        }
        guard shape.reduce(1, *) == count else { throw NNError("cannot reshape \(input) to \(target)") }
        return shape
    }

    /// Inference: raw outputs (logits) for a batch, without recording gradients.
    public func predict(_ x: Tensor) throws -> Tensor {
        var rng = RandomSource(seed: 0)
        let tape = Tape(recording: false)
        return tape.value(try forward(x, training: false, tape: tape, rng: &rng).output)
    }

    /// Outputs read the way the graph says: softmax, sigmoid, or as they are.
    public func probabilities(_ x: Tensor) throws -> Tensor {
        let z = try predict(x)
        switch graph.outputKind {
        case .softmax: return Softmax.forward(z)
        case .sigmoid: return Elementwise.sigmoid(z)
        case .none: return z
        }
    }
}
