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
            throw NNError("input \(x.shape) does not match the model input \(expected) (first dimension is the batch)")
        }
        guard activationQuant.isEmpty || !tape.recording else {
            throw NNError("a bundle with quantized activations runs for inference only; train its fp32 original")
        }
        values[graph.inputs[0].name] = tape.leaf(activationQuant[graph.inputs[0].name].map { $0.applied(to: x) } ?? x)
        for (name, t) in parameters { values[name] = tape.leaf(t, requiresGrad: tape.recording && !frozen.contains(name)) }
        let fused = keep.map { fusedReLUs(keeping: $0) } ?? [:]
        var skipped = Set<String>()
        for node in order where !skipped.contains(node.name) {
            if let relu = fused[node.name] {
                let out = try Profiler.measure("forward \(node.op.rawValue)+relu") {
                    try applyFused(node, tape: tape, values: values, training: training)
                }
                skipped.insert(relu.name)
                values[relu.outputs[0]] = out
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

    /// Batch norms and additions whose output only a ReLU reads (and no one else needs), by name,
    /// with that ReLU. Not where an activation grid rounds the tensor between them.
    func fusedReLUs(keeping keep: Set<String>) -> [String: Graph.Node] {
        var consumers: [String: [Graph.Node]] = [:]
        for n in order { for i in n.inputs { consumers[i, default: []].append(n) } }
        let outputs = Set(graph.outputs)
        var fused: [String: Graph.Node] = [:]
        for n in order where n.op == .batchnorm || n.op == .add {
            let out = n.outputs[0]
            guard !keep.contains(out), !outputs.contains(out), activationQuant[out] == nil, let readers = consumers[out],
                readers.count == 1,
                readers[0].op == .relu, readers[0].inputs == [out]
            else { continue }
            fused[n.name] = readers[0]
        }
        return fused
    }

    func applyFused(_ node: Graph.Node, tape: Tape, values: [String: Var], training: Bool) throws -> Var {
        func input(_ i: Int) throws -> Var {
            if let v = values[node.inputs[i]] { return v }
            throw NNError("node '\(node.name)' reads '\(node.inputs[i])', which has no value")
        }
        if node.op == .add { return try tape.addRelu(try input(0), try input(1)) }
        guard let mean = buffers[node.inputs[3]], let variance = buffers[node.inputs[4]] else {
            throw NNError("batchnorm '\(node.name)' has no running statistics")
        }
        return try tape.batchnormRelu(
            try input(0), scale: try input(1), bias: try input(2), runningMean: mean, runningVar: variance,
            epsilon: Float(node.float("epsilon")), momentum: Float(node.float("momentum")), training: training)
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
