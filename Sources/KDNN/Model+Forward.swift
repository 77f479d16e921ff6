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
        let fused = keep.map { fusedReLUs(keeping: $0) } ?? [:]
        var skipped = Set<String>()
        for node in order where !skipped.contains(node.name) {
            if let fusion = fused[node.name] {
                let out = try Profiler.measure("forward \(fusion.label)") {
                    try applyFused(node, fusion, tape: tape, values: values, training: training)
                }
                skipped.formUnion(fusion.absorbed.map(\.name))
                values[fusion.absorbed.last!.outputs[0]] = out
                continue
            }
            var out = try Profiler.measure("forward \(node.op.rawValue)") {
                try apply(node, tape: tape, values: values, training: training, rng: &rng)
            }
            if let q = activationQuant[node.outputs[0]] { out = tape.leaf(q.applied(to: tape.value(out))) }
            values[node.outputs[0]] = out
        }
        guard let output = values[graph.outputs[0]] else { throw NNError("graph output '\(graph.outputs[0])' was not computed") }
        return Forward(tape: tape, values: values, output: output)
    }

    /// A batch norm or an addition run together with the ReLU after it (and, for a batch norm
    /// whose output only an addition reads, with that addition too).
    struct Fusion {
        /// The nodes run inside the first one, in order (the last one's output is the result).
        var absorbed: [Graph.Node]
        /// The addition's other operand, for batch norm + add + ReLU.
        var residual: String?
        var label: String
    }

    /// Batch norms and additions whose output only a ReLU reads (possibly through an addition,
    /// for a batch norm), by the first node's name. Never where a caller needs the tensors in
    /// between (`keep`), where an activation grid rounds them, or at a graph output.
    func fusedReLUs(keeping keep: Set<String>) -> [String: Fusion] {
        var consumers: [String: [Graph.Node]] = [:]
        for n in order { for i in n.inputs { consumers[i, default: []].append(n) } }
        let outputs = Set(graph.outputs)
        func soleReader(_ tensor: String) -> Graph.Node? {
            guard !keep.contains(tensor), !outputs.contains(tensor), activationQuant[tensor] == nil, let r = consumers[tensor], r.count == 1
            else { return nil }
            return r[0]
        }
        // Where in the order each tensor is made (graph inputs and parameters: before everything).
        var madeAt: [String: Int] = [:]
        for (i, n) in order.enumerated() { for o in n.outputs { madeAt[o] = i } }
        var fused: [String: Fusion] = [:]
        var taken = Set<String>()
        for (position, n) in order.enumerated() where (n.op == .batchnorm || n.op == .add) && !taken.contains(n.name) {
            guard let next = soleReader(n.outputs[0]) else { continue }
            if next.op == .relu {
                fused[n.name] = Fusion(absorbed: [next], residual: nil, label: "\(n.op.rawValue)+relu")
                taken.insert(next.name)
            } else if n.op == .batchnorm, next.op == .add, next.inputs.count == 2, next.inputs[0] != next.inputs[1],
                let relu = soleReader(next.outputs[0]), relu.op == .relu,
                (madeAt[next.inputs[0] == n.outputs[0] ? next.inputs[1] : next.inputs[0]] ?? -1) < position
            {
                // The addition's other operand exists by the time the batch norm runs.
                let residual = next.inputs[0] == n.outputs[0] ? next.inputs[1] : next.inputs[0]
                fused[n.name] = Fusion(absorbed: [next, relu], residual: residual, label: "batchnorm+add+relu")
                taken.formUnion([next.name, relu.name])
            }
        }
        return fused
    }

    func applyFused(_ node: Graph.Node, _ fusion: Fusion, tape: Tape, values: [String: Var], training: Bool) throws -> Var {
        func value(_ name: String) throws -> Var {
            if let v = values[name] { return v }
            throw NNError("node '\(node.name)' reads '\(name)', which has no value")
        }
        if node.op == .add { return try tape.addRelu(try value(node.inputs[0]), try value(node.inputs[1])) }
        guard let mean = buffers[node.inputs[3]], let variance = buffers[node.inputs[4]] else {
            throw NNError("batchnorm '\(node.name)' has no running statistics")
        }
        let (x, scale, bias) = (try value(node.inputs[0]), try value(node.inputs[1]), try value(node.inputs[2]))
        let (epsilon, momentum) = (Float(node.float("epsilon")), Float(node.float("momentum")))
        if let residual = fusion.residual {
            return try tape.batchnormAddRelu(
                x, scale: scale, bias: bias, runningMean: mean, runningVar: variance, epsilon: epsilon, momentum: momentum,
                training: training, residual: try value(residual))
        }
        return try tape.batchnormRelu(
            x, scale: scale, bias: bias, runningMean: mean, runningVar: variance, epsilon: epsilon, momentum: momentum, training: training)
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
