import KDBundle
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// A forward pass prepared for inference on fixed weights: batch norm folded into the convolution
/// before it (W' = W·γ/σ, b' = (b − μ)·γ/σ + β) and ReLU applied in place on the output of the
/// convolution or addition that feeds it, so each of those layers costs one pass over the
/// activations instead of three. Built once per model (weights must not change afterwards).
///
///     let plan = try InferencePlan(model)
///     let logits = try plan.run(images)
public final class InferencePlan: @unchecked Sendable {
    enum Step {
        /// conv2d (+ folded batchnorm) (+ relu); `output` is the name the graph uses downstream.
        case conv(input: String, weight: Tensor, bias: Tensor?, window: Window, groups: Int, relu: Bool, output: String)
        /// add (+ relu)
        case add(String, String, relu: Bool, output: String)
        case node(Graph.Node)
    }

    public let model: Model
    let steps: [Step]
    /// The node (and what was fused into it) each step runs, e.g. `conv1+bn1+relu1`.
    public let stepNames: [String]

    public init(_ model: Model) throws {
        self.model = model
        var consumers: [String: Int] = [:]
        for n in model.order { for i in n.inputs { consumers[i, default: 0] += 1 } }
        for o in model.graph.outputs { consumers[o, default: 0] += 1 }
        let byInput = Dictionary(grouping: model.order, by: { $0.inputs.first ?? "" })
        func soleConsumer(_ tensor: String, _ op: Graph.Op) -> Graph.Node? {
            guard consumers[tensor] == 1, let n = byInput[tensor]?.first(where: { $0.inputs.first == tensor }), n.op == op else {
                return nil
            }
            return n
        }
        var skip = Set<String>()
        var steps: [Step] = []
        var names: [String] = []
        for node in model.order where !skip.contains(node.name) {
            switch node.op {
            case .conv2d:
                let w = model.parameters[node.inputs[1]]!
                var weight = w
                var bias = node.inputs.count > 2 ? model.parameters[node.inputs[2]] : nil
                var out = node.outputs[0]
                if let bn = soleConsumer(out, .batchnorm), let mean = model.buffers[bn.inputs[3]],
                    let variance = model.buffers[bn.inputs[4]],
                    let gamma = model.parameters[bn.inputs[1]], let beta = model.parameters[bn.inputs[2]]
                {
                    let o = w.shape[0]
                    let per = w.count / o
                    weight = w.copy()
                    let b = Tensor(zeros: [o])
                    for c in 0..<o {
                        let s = gamma[c] / (variance[c] + Float(bn.float("epsilon"))).squareRoot()
                        for j in 0..<per { weight[c * per + j] *= s }
                        b[c] = ((bias?[c] ?? 0) - mean[c]) * s + beta[c]
                    }
                    bias = b
                    skip.insert(bn.name)
                    out = bn.outputs[0]
                }
                var relu = false
                if let r = soleConsumer(out, .relu) {
                    relu = true
                    skip.insert(r.name)
                    out = r.outputs[0]
                }
                names.append(
                    ([node.name] + [soleConsumer(node.outputs[0], .batchnorm)?.name].compactMap { $0 } + (relu ? [out] : [])).joined(
                        separator: "+"))
                let window = Window(
                    kernel: [w.shape[2], w.shape[3]], stride: node.ints("stride"), pads: node.ints("pads"), dilation: node.ints("dilation"))
                steps.append(
                    .conv(
                        input: node.inputs[0], weight: weight, bias: bias, window: window, groups: node.int("groups"), relu: relu,
                        output: out))
            case .add:
                var out = node.outputs[0]
                var relu = false
                if let r = soleConsumer(out, .relu) {
                    relu = true
                    skip.insert(r.name)
                    out = r.outputs[0]
                }
                steps.append(.add(node.inputs[0], node.inputs[1], relu: relu, output: out))
                names.append(relu ? "\(node.name)+\(out)" : node.name)
            default:
                steps.append(.node(node))
                names.append(node.name)
            }
        }
        self.steps = steps
        self.stepNames = names
    }

    /// Raw outputs (logits) for a batch; `timing`, when given, receives each step's index and seconds.
    public func run(_ x: Tensor, timing: ((Int, Double) -> Void)? = nil) throws -> Tensor {
        let expected = model.graph.inputs[0].shape
        guard x.rank == expected.count, zip(x.shape.dropFirst(), expected.dropFirst()).allSatisfy({ $0 == $1 }) else {
            throw NNError("input \(x.shape) does not match the model input \(expected) (first dimension is the batch)")
        }
        let tape = Tape(recording: false)
        let quant = model.activationQuant
        let input = model.graph.inputs[0].name
        var values: [String: Var] = [input: tape.leaf(quant[input].map { $0.applied(to: x) } ?? x)]
        func store(_ name: String, _ y: Tensor) { values[name] = tape.leaf(quant[name].map { $0.applied(to: y) } ?? y) }
        /// Conv and add outputs are fresh tensors: their grid rounding happens in place.
        func storeFresh(_ name: String, _ y: Tensor) {
            quant[name]?.applyInPlace(y)
            values[name] = tape.leaf(y)
        }
        for (name, t) in model.parameters { values[name] = tape.leaf(t) }
        var rng = RandomSource(seed: 0)
        for (index, step) in steps.enumerated() {
            var t0 = timespec()
            if timing != nil { clock_gettime(CLOCK_MONOTONIC, &t0) }
            defer {
                if let timing {
                    var t1 = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    timing(index, Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9)
                }
            }
            switch step {
            case .conv(let input, let weight, let bias, let window, let groups, let relu, let output):
                let y = try Conv2d.forward(x: tape.value(values[input]!), weight: weight, bias: bias, window, groups: groups)
                if relu { Elementwise.reluInPlace(y) }
                storeFresh(output, y)
            case .add(let a, let b, let relu, let output):
                let y = try Elementwise.add(tape.value(values[a]!), tape.value(values[b]!))
                if relu { Elementwise.reluInPlace(y) }
                storeFresh(output, y)
            case .node(let node):
                store(node.outputs[0], tape.value(try model.apply(node, tape: tape, values: values, training: false, rng: &rng)))
            }
        }
        return tape.value(values[model.graph.outputs[0]]!)
    }

    /// Outputs read as the graph says (softmax, sigmoid or raw).
    public func probabilities(_ x: Tensor) throws -> Tensor {
        let z = try run(x)
        switch model.graph.outputKind {
        case .softmax: return Softmax.forward(z)
        case .sigmoid: return Elementwise.sigmoid(z)
        case .none: return z
        }
    }
}
