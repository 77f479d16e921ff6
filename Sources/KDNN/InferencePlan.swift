import Foundation
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
    /// Indirect: a step's payload is one reference, so switching on a step copies that rather
    /// than every kernel buffer and value name it holds, each retained and released (1.2 % of
    /// mobilenetv2 ×0.5's samples at batch 64 on two workers, whose cores contended for the counts).
    indirect enum Step {
        /// conv2d (+ folded batchnorm) (+ an activation, inside the depthwise kernel's rows);
        /// `output` is the name the graph uses downstream.
        case conv(input: String, weight: Tensor, bias: Tensor?, window: Window, groups: Int, epilogue: Epilogue.Function?, output: String)
        /// An activation applied in place to the value its input alone feeds (an epilogue pass
        /// while the producer's output is warm): channel-blocked values keep their layout when
        /// f(0) = 0, so their zero halo stays zero.
        case activate(input: String, Activation, output: String)
        /// x [N, C, H, W] times per-image channel scales [N, C, 1, 1] (a squeeze-and-excitation
        /// gate), channel-blocked when x is.
        case scaleChannels(input: String, scale: String, output: String)
        /// The same on the direct kernel, output in channel-blocked layout; `residual` is a
        /// following addition's other operand, added before the activation.
        case direct(input: String, conv: DirectConv, epilogue: Epilogue.Function?, residual: String?, output: String)
        /// conv2d (+ folded batchnorm) (+ relu) → 2×2 max pool at stride 2, fused on the pixel
        /// kernel: NCHW in, NCHW out.
        case directPool(input: String, conv: DirectConv, epilogue: Epilogue.Function?, output: String)
        /// A 1×1 stride-1 convolution over a small map as a linear layer over its pixels: the blocked
        /// input gathered to pixel rows, the packed linear kernel (6 pixels × 64 channels a tile, so
        /// each weight is read a few times per image rather than once per output row), scattered
        /// back to blocks with the residual and the activation.
        case pointwise(input: String, op: PackedLinear, epilogue: Epilogue.Function?, residual: String?, output: String)
        /// add (+ relu)
        case add(String, String, relu: Bool, output: String)
        /// linear (+ an activation) on pre-packed weights
        case linear(input: String, op: PackedLinear, epilogue: Epilogue.Function?, output: String)
        /// flatten → linear (+ relu) on a channel-blocked input: the weight's columns are permuted
        /// to the blocked order (zero for the lanes past the channels), so the blocked buffer,
        /// without a halo, is the linear layer's input as it stands, with no conversion to NCHW.
        case blockedLinear(input: String, op: PackedLinear, epilogue: Epilogue.Function?, output: String)
        /// global average pool → flatten (→ dropout, the identity here) → linear (+ an activation)
        /// on a channel-blocked input: the pool's [N, C] means go straight into the linear kernel,
        /// the same values the four steps compute, without three steps' dispatch and buffers.
        case pooledLinear(input: String, op: PackedLinear, epilogue: Epilogue.Function?, output: String)
        /// Channels of blocked inputs copied to a blocked output (concatenations, slices and
        /// shuffles along channels, composed: InferencePlan+Channels.swift).
        case gather(inputs: [String], sources: [BlockedTensor.ChannelSource], output: String)
        case node(Graph.Node)

        /// The value the step writes.
        var output: String {
            switch self {
            case .conv(_, _, _, _, _, _, let output), .activate(_, _, let output), .scaleChannels(_, _, let output),
                .direct(_, _, _, _, let output), .directPool(_, _, _, let output), .pointwise(_, _, _, _, let output),
                .add(_, _, _, let output), .linear(_, _, _, let output), .blockedLinear(_, _, _, let output),
                .pooledLinear(_, _, _, let output),
                .gather(_, _, let output):
                output
            case .node(let node): node.outputs[0]
            }
        }

        /// The tensors the step reads.
        var reads: [String] {
            switch self {
            case .conv(let input, _, _, _, _, _, _): [input]
            case .activate(let input, _, _): [input]
            case .scaleChannels(let input, let scale, _): [input, scale]
            case .direct(let input, _, _, let residual, _), .pointwise(let input, _, _, let residual, _):
                [input] + (residual.map { [$0] } ?? [])
            case .directPool(let input, _, _, _): [input]
            case .add(let a, let b, _, _): [a, b]
            case .linear(let input, _, _, _), .blockedLinear(let input, _, _, _), .pooledLinear(let input, _, _, _): [input]
            case .gather(let inputs, _, _): inputs
            case .node(let node): node.inputs
            }
        }
    }

    public let model: Model
    let steps: [Step]
    /// The node (and what was fused into it) each step runs, e.g. `conv1+bn1+relu1`.
    public let stepNames: [String]
    /// The steps that run on the calling thread alone when one image runs on several workers, as
    /// `tuneThreads` chose them (InferencePlan+Threads.swift).
    let solo = SoloSteps()

    /// `keep`: intermediate values a caller reads besides the output (a FitNets hint layer, FSP's
    /// feature maps): no fusion absorbs them and none is released, so `run(_:keeping:)` returns them.
    /// `lateSlices: false` runs a batch's late layers in the same slices as its early ones
    /// (InferencePlan+Stages.swift; the results are the same bits).
    public init(_ model: Model, keep: Set<String> = [], lateSlices: Bool = true) throws {
        self.model = model
        let unknown = keep.subtracting(model.order.flatMap(\.outputs))
        guard unknown.isEmpty else { throw NNError("the model has no node output named \(unknown.sorted().joined(separator: ", "))") }
        kept = keep
        var consumers: [String: Int] = [:]
        for n in model.order { for i in n.inputs { consumers[i, default: 0] += 1 } }
        for o in model.graph.outputs { consumers[o, default: 0] += 1 }
        for k in keep { consumers[k, default: 0] += 1 }
        let stats = (try? model.graph.stats(tensorShapes: model.tensorShapes, batch: 1)) ?? []
        let shapes = Dictionary(stats.map { ($0.node.outputs[0], $0.outputShape) }, uniquingKeysWith: { a, _ in a })
        /// A node output's shape at batch 1, or the graph input's.
        func shape(_ name: String) -> [Int]? { name == model.graph.inputs[0].name ? model.inputShape : shapes[name] }
        var steps: [Step] = []
        var names: [String] = []
        // The tensors that `runSlice` will hold channel-blocked (the same rules as there), and the
        // NCHW outputs of fused convolution-and-pool steps.
        var blockedTensors = Set<String>()
        var pooledTensors = Set<String>()
        // The channels each gather step's output holds, as channels of values no gather made.
        var gathered: [String: [ChannelRef]] = [:]
        var absorbed = Set<String>()
        // Each 1 × 1 `.direct` or `.pointwise` step's folded weight and bias, by output name.
        var oneByOneWeights: [String: (Tensor, Tensor?)] = [:]
        // The node that alone reads a value, for values with one reader.
        var soleReader: [String: Graph.Node] = [:]
        for n in model.order { for i in Set(n.inputs) where consumers[i] == 1 { soleReader[i] = n } }
        func append(_ step: Step, _ nodes: ArraySlice<Graph.Node>) {
            steps.append(step)
            names.append(nodes.map(\.name).joined(separator: "+"))
            switch step {
            case .direct(_, _, _, _, let out), .pointwise(_, _, _, _, let out), .gather(_, _, let out): blockedTensors.insert(out)
            case .directPool(_, _, _, let out): pooledTensors.insert(out)
            case .add(let a, let b, _, let out) where blockedTensors.contains(a) || blockedTensors.contains(b):
                blockedTensors.insert(out)
            case .scaleChannels(let input, _, let out) where blockedTensors.contains(input): blockedTensors.insert(out)
            case .activate(let input, let f, let out) where f.preservesZero && blockedTensors.contains(input): blockedTensors.insert(out)
            case .node(let n) where [.maxpool, .relu].contains(n.op) && blockedTensors.contains(n.inputs[0]):
                blockedTensors.insert(n.outputs[0])
            default: break
            }
        }
        /// Whether `nodes[i]` is a ReLU.
        func relu(_ nodes: ArraySlice<Graph.Node>, _ i: Int) -> Bool { i < nodes.endIndex && nodes[i].op == .relu }
        /// `nodes[i]` as a kernel's epilogue function, if it is an activation (one with f(0) = 0
        /// where `preservingZero`).
        func function(_ nodes: ArraySlice<Graph.Node>, _ i: Int, preservingZero: Bool) -> Epilogue.Function? {
            guard i < nodes.endIndex else { return nil }
            if nodes[i].op == .relu { return .relu }
            guard let f = nodes[i].activation, !preservingZero || f.preservesZero else { return nil }
            return .activation(f)
        }
        /// Plans a chain of the lowering (anchor first): the longest prefix a fused step runs, then
        /// the rest as a chain of its own.
        func plan(_ nodes: ArraySlice<Graph.Node>, residual: String?) {
            guard let node = nodes.first else { return }
            let start = nodes.startIndex
            var next = start + 1
            defer { plan(nodes[next...], residual: residual) }
            if absorbed.contains(node.name) { return }
            switch node.op {
            case .conv2d:
                let w = model.parameters[node.inputs[1]]!
                var weight = w
                var bias = node.inputs.count > 2 ? model.parameters[node.inputs[2]] : nil
                if next < nodes.endIndex, nodes[next].op == .batchnorm, let bn = Optional(nodes[next]),
                    let mean = model.buffers[bn.inputs[3]], let variance = model.buffers[bn.inputs[4]],
                    let gamma = model.parameters[bn.inputs[1]], let beta = model.parameters[bn.inputs[2]]
                {
                    // W' = W·γ/σ, b' = (b − μ)·γ/σ + β
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
                    next += 1
                }
                let window = Window(
                    kernel: [w.shape[2], w.shape[3]], stride: node.ints("stride"), pads: node.ints("pads"), dilation: node.ints("dilation"))
                let groups = node.int("groups")
                let direct = DirectConv.applies(groups: groups)
                // An NCHW input from a fused step is read as it is, unless Winograd wants blocks.
                let plainInput =
                    pooledTensors.contains(node.inputs[0])
                    && !(Self.winograd && WinogradConv.applies(kernel: [w.shape[2], w.shape[3]], window: window, groups: 1))
                let conv =
                    direct
                    ? DirectConv(
                        weight: weight, bias: bias, window: window,
                        inBlock: plainInput ? 1 : DirectConv.inBlock(forChannels: weight.shape[1]), winograd: Self.winograd)
                    : nil
                // A pointwise convolution over a small map: the linear kernel over its pixels.
                if let conv, conv.inBlock == 8, Self.pointwisePays(weight: weight.shape, window: window, output: shapes[node.outputs[0]]) {
                    var end = next
                    var add: String?
                    if end < nodes.endIndex, nodes[end].op == .add, let residual, shapes[residual] != nil,
                        shapes[residual] == shapes[nodes[end].outputs[0]]
                    {
                        add = residual
                        end += 1
                    }
                    let epilogue = function(nodes, end, preservingZero: true)
                    if epilogue != nil { end += 1 }
                    let op = PackedLinear(weight: Tensor(shape: [weight.shape[0], weight.shape[1]], values: weight.array), bias: bias)
                    oneByOneWeights[nodes[end - 1].outputs[0]] = (weight, bias)
                    append(
                        .pointwise(input: node.inputs[0], op: op, epilogue: epilogue, residual: add, output: nodes[end - 1].outputs[0]),
                        nodes[start..<end])
                    next = end
                    return
                }
                // A residual addition (+ ReLU) on the blocked direct kernel.
                if next < nodes.endIndex, nodes[next].op == .add, let residual, let conv, conv.inBlock == 8,
                    shapes[residual] != nil, shapes[residual] == shapes[nodes[next].outputs[0]],
                    next + 1 == nodes.endIndex || relu(nodes, next + 1)
                {
                    let out = relu(nodes, next + 1) ? next + 2 : next + 1
                    if conv.readsWithoutHalo { oneByOneWeights[nodes[out - 1].outputs[0]] = (weight, bias) }
                    append(
                        .direct(
                            input: node.inputs[0], conv: conv, epilogue: out > next + 1 ? .relu : nil, residual: residual,
                            output: nodes[out - 1].outputs[0]), nodes[start..<out])
                    next = out
                    return
                }
                // The activation, where the kernel runs it: the direct kernel's rows also cover the
                // zero halo and padding lanes, so there it must map 0 to 0.
                let epilogue = function(nodes, next, preservingZero: direct)
                if epilogue != nil { next += 1 }
                let out = nodes[next - 1].outputs[0]
                guard let conv else {
                    append(
                        .conv(
                            input: node.inputs[0], weight: weight, bias: bias, window: window, groups: groups, epilogue: epilogue,
                            output: out), nodes[start..<next])
                    return
                }
                if epilogue == nil || epilogue == .relu, next < nodes.endIndex, nodes[next].op == .maxpool, Self.isPool2x2(nodes[next]),
                    let s = shape(node.inputs[0]), s.count == 4, conv.poolFuses(h: s[2], w: s[3])
                {
                    append(
                        .directPool(input: node.inputs[0], conv: conv, epilogue: epilogue, output: nodes[next].outputs[0]),
                        nodes[start...next])
                    next += 1
                } else {
                    if conv.readsWithoutHalo { oneByOneWeights[out] = (weight, bias) }
                    append(.direct(input: node.inputs[0], conv: conv, epilogue: epilogue, residual: nil, output: out), nodes[start..<next])
                }
            case .linear where model.parameters[node.inputs[1]]?.rank == 2 && shape(node.inputs[0])?.count == 2:
                let epilogue = function(nodes, next, preservingZero: false)
                if epilogue != nil { next += 1 }
                let bias = node.inputs.count > 2 ? model.parameters[node.inputs[2]] : nil
                append(
                    .linear(
                        input: node.inputs[0], op: PackedLinear(weight: model.parameters[node.inputs[1]]!, bias: bias), epilogue: epilogue,
                        output: nodes[next - 1].outputs[0]), nodes[start..<next])
            case .add where shapes[node.inputs[0]] != nil && shapes[node.inputs[0]] == shapes[node.inputs[1]]:
                let fused = relu(nodes, next)
                if fused { next += 1 }
                append(.add(node.inputs[0], node.inputs[1], relu: fused, output: nodes[next - 1].outputs[0]), nodes[start..<next])
            case .flatten where node.int("axis") == 1 && blockedTensors.contains(node.inputs[0]) && next < nodes.endIndex:
                let fc = nodes[next]
                guard fc.op == .linear, let w = model.parameters[fc.inputs[1]], w.rank == 2,
                    let s = shapes[node.inputs[0]], s.count == 4, s[1] * s[2] * s[3] == w.shape[1]
                else {
                    append(.node(node), nodes[start..<next])
                    return
                }
                next += 1
                let epilogue = function(nodes, next, preservingZero: false)
                if epilogue != nil { next += 1 }
                let bias = fc.inputs.count > 2 ? model.parameters[fc.inputs[2]] : nil
                let op = PackedLinear(weight: Self.blockedColumns(w, channels: s[1], h: s[2], w: s[3]), bias: bias)
                append(
                    .blockedLinear(input: node.inputs[0], op: op, epilogue: epilogue, output: nodes[next - 1].outputs[0]),
                    nodes[start..<next])
            case .globalavgpool where blockedTensors.contains(node.inputs[0]):
                // Pool → flatten → dropouts → linear, each value read by the next alone.
                var end = next
                if end < nodes.endIndex, nodes[end].op == .flatten, nodes[end].int("axis") == 1 { end += 1 }
                while end > next, end < nodes.endIndex, nodes[end].op == .dropout { end += 1 }
                let chain = nodes[start..<min(end + 1, nodes.endIndex)]
                let channels = shapes[node.inputs[0]].map { $0.count == 4 ? $0[1] : 0 } ?? 0
                guard end > next, end < nodes.endIndex, nodes[end].op == .linear, let w = model.parameters[nodes[end].inputs[1]],
                    w.rank == 2, w.shape[1] == channels,
                    chain.dropLast().allSatisfy({ n in
                        consumers[n.outputs[0]] == 1 && !model.graph.outputs.contains(n.outputs[0])
                            && model.activationQuant[n.outputs[0]] == nil
                    }),
                    zip(chain.dropLast(), chain.dropFirst()).allSatisfy({ $1.inputs[0] == $0.outputs[0] })
                else {
                    append(.node(node), nodes[start..<next])
                    return
                }
                next = end + 1
                let epilogue = function(nodes, next, preservingZero: false)
                if epilogue != nil { next += 1 }
                let fc = nodes[end]
                let bias = fc.inputs.count > 2 ? model.parameters[fc.inputs[2]] : nil
                append(
                    .pooledLinear(
                        input: node.inputs[0], op: PackedLinear(weight: w, bias: bias), epilogue: epilogue,
                        output: nodes[next - 1].outputs[0]),
                    nodes[start..<next])
            case .activation
            where consumers[node.inputs[0]] == 1 && !model.graph.outputs.contains(node.inputs[0])
                && node.inputs[0] != model.graph.inputs[0].name && model.parameters[node.inputs[0]] == nil
                && model.activationQuant[node.inputs[0]] == nil && model.activationQuant[node.outputs[0]] == nil:
                guard let f = node.activation else {
                    append(.node(node), nodes[start..<next])
                    return
                }
                append(.activate(input: node.inputs[0], f, output: node.outputs[0]), nodes[start..<next])
            case .mul:
                // A squeeze-and-excitation gate: x [N, C, H, W] times a computed [N, C, 1, 1].
                guard let a = shapes[node.inputs[0]], let b = shapes[node.inputs[1]], a.count == 4, b.count == 4,
                    model.parameters[node.inputs[0]] == nil, model.parameters[node.inputs[1]] == nil,
                    model.activationQuant[node.outputs[0]] == nil
                else {
                    append(.node(node), nodes[start..<next])
                    return
                }
                let gate: [Int] = [a[0], a[1], 1, 1]
                if b == gate && a != gate {
                    append(.scaleChannels(input: node.inputs[0], scale: node.inputs[1], output: node.outputs[0]), nodes[start..<next])
                } else if a == gate && b != gate {
                    append(.scaleChannels(input: node.inputs[1], scale: node.inputs[0], output: node.outputs[0]), nodes[start..<next])
                } else {
                    append(.node(node), nodes[start..<next])
                }
            case .concat, .slice, .reshape:
                // Along channels: a gather from what the inputs are gathered from. A shuffle's three
                // nodes are one step, at the first; the later two are absorbed.
                guard let (spanned, channels) = Self.channelOp(node, shape: shape, reader: { soleReader[$0] }),
                    spanned.dropLast().allSatisfy({ n in
                        !keep.contains(n.outputs[0]) && !model.graph.outputs.contains(n.outputs[0])
                            && model.activationQuant[n.outputs[0]] == nil
                    }),
                    model.activationQuant[spanned.last!.outputs[0]] == nil,
                    channels.allSatisfy({ model.parameters[$0.tensor] == nil && model.buffers[$0.tensor] == nil })
                else {
                    append(.node(node), nodes[start..<next])
                    return
                }
                let composed = channels.map { gathered[$0.tensor]?[$0.channel] ?? $0 }
                let (inputs, sources) = Self.gatherSources(composed)
                let output = spanned.last!.outputs[0]
                gathered[output] = composed
                absorbed.formUnion(spanned.dropFirst().map(\.name))
                append(.gather(inputs: inputs, sources: sources, output: output), spanned[...])
            default:
                append(.node(node), nodes[start..<next])
            }
        }
        for group in Lowering(model, keeping: keep).groups { plan(group.nodes[...], residual: group.residual) }
        (self.steps, self.stepNames) = Self.droppingUnreadGathers(steps, names, needed: Set(model.graph.outputs).union(keep))
        // Each activation is released after its last reader (its buffer, still in the cache, then
        // holds a later layer's output), except the graph's outputs.
        var last: [String: Int] = [:]
        for (i, step) in self.steps.enumerated() { for name in step.reads { last[name] = i } }
        let keep = Set(model.graph.outputs).union(model.parameters.keys).union(model.buffers.keys).union(keep)
        var releases = [[String]](repeating: [], count: self.steps.count)
        for (name, i) in last where !keep.contains(name) { releases[i].append(name) }
        releases = releases.map { $0.sorted() }
        var filters = [Depthwise.BlockedFilters?](repeating: nil, count: self.steps.count)
        for (i, step) in self.steps.enumerated() {
            if case .conv(_, let weight, let bias, _, let groups, _, _) = step, groups > 1, weight.rank == 4, weight.shape[1] == 1,
                weight.shape[0] == groups
            {
                filters[i] = Depthwise.BlockedFilters(weight: weight, bias: bias)
            }
        }
        depthwiseFilters = filters
        let halves = Self.halvedBlocks(self.steps, weights: oneByOneWeights, model: model, keep: kept)
        halved = self.steps.indices.map { halves[$0] }
        // Tensors that only blocked linear layers and 1×1 convolutions read are stored without a
        // halo, unless a convolution adds one as its residual to an output that keeps a halo (it
        // would be copied into one).
        var readers: [String: [Step]] = [:]
        for step in self.steps { for name in step.reads { readers[name, default: []].append(step) } }
        var bare = Set(
            readers.filter { name, steps in
                !keep.contains(name)
                    && steps.allSatisfy {
                        switch $0 {
                        case .blockedLinear, .pooledLinear: return true
                        case .direct(let input, let conv, _, let residual, _):
                            return (input == name && conv.readsWithoutHalo) || (residual == name && input != name)
                        case .pointwise(let input, _, _, let residual, _): return input == name || residual == name
                        default: return false
                        }
                    }
            }.keys)
        while true {
            let lost = bare.filter { name in
                readers[name]!.contains {
                    switch $0 {
                    case .direct(_, _, _, let residual, let output), .pointwise(_, _, _, let residual, let output):
                        return residual == name && !bare.contains(output)
                    default: return false
                    }
                }
            }
            if lost.isEmpty { break }
            bare.subtract(lost)
        }
        unpadded = bare
        // The parameters that steps run as graph nodes read (the others are packed into their steps).
        let nodeParameters = Set(
            self.steps.flatMap { step -> [String] in
                if case .node(let node) = step { return node.inputs }
                return []
            }
        ).filter { model.parameters[$0] != nil }.sorted()
        // Blocked activations carry the zero padding of the convolutions that read them, so those
        // convolutions run interior tiles only. A Winograd convolution reads past the edge where
        // its tiles hang over it: F(4×4, 3×3) up to 3 pixels more, F(2×2, 3×3) 1. The halo stops
        // at 3, so F(4×4, 3×3) runs on 14 × 14 (resnet8's second stage on MNIST, 0.66–0.75 ms →
        // 0.58 ms at batch 64) and sizes of 4k + 1 take F(2×2, 3×3).
        // Each activation gets the halo its own readers need, not the largest any layer needs:
        // efficientnet-lite0's stem (Winograd, 3) had every depthwise input of its 3 × 3 and 5 × 5
        // layers carry 3 pixels of zeros on each side, 100 pixels a plane on its 4 × 4 maps. An
        // output that takes over its input's buffer or layout (an activation or channel scale in
        // place, an addition, a residual added in a convolution) shares its halo.
        var need: [String: Int] = [:]
        var link: [String: String] = [:]
        func root(_ name: String) -> String {
            var r = name
            while let up = link[r] { r = up }
            return r
        }
        func join(_ a: String, _ b: String) {
            let (ra, rb) = (root(a), root(b))
            if ra != rb { link[ra] = rb }
        }
        for step in self.steps {
            switch step {
            case .conv(let input, let weight, _, let window, let groups, _, _):
                if groups > 1, weight.shape[1] == 1, weight.shape[0] == groups {
                    // On a small map the kernel pads each plane itself (Depthwise.padsItself).
                    let pad = window.pads.max() ?? 0
                    let itself = shapes[input].map { Depthwise.padsItself(h: $0[2], w: $0[3], pad: pad) } ?? false
                    need[input] = max(need[input] ?? 0, itself ? 0 : pad)
                }
            case .direct(let input, let conv, _, let residual, let output):
                if conv.inBlock == 8 {
                    let winograd = conv.winograd != nil ? shapes[output].map { WinogradConv.halo(h: $0[2], w: $0[3]) } ?? 1 : 0
                    need[input] = max(need[input] ?? 0, conv.window.pads.max() ?? 0, winograd)
                }
                if let residual { join(residual, output) }
            case .pointwise(_, _, _, let residual, let output): if let residual { join(residual, output) }
            case .activate(let input, _, let output), .scaleChannels(let input, _, let output): join(input, output)
            case .add(let a, let b, _, let output):
                join(a, output)
                join(b, output)
            case .node(let node) where node.op == .relu: join(node.inputs[0], node.outputs[0])
            default: break
            }
        }
        var classNeed: [String: Int] = [:]
        for (name, n) in need { classNeed[root(name), default: 0] = max(classNeed[root(name)] ?? 0, min(3, n)) }
        var pads: [String: Int] = [:]
        for name in Set(need.keys).union(link.keys).union(link.values) { pads[name] = classNeed[root(name)] ?? 0 }
        self.pads = pads
        halo = pads.values.max() ?? 0
        // Images per slice: the largest activation of a slice stays within 256 KiB (half an L2),
        // so a slice's layers pass their outputs to each other through the cache.
        let largest = stats.map { $0.outputShape.reduce(1, *) }.max() ?? 1
        // A slice also holds at least ~16 MFLOP of work, so that what every slice costs besides
        // its layers (a few microseconds) stays small next to them: LeNet-5 (0.8 MFLOP an image)
        // measured 7 % faster at batch 64 in slices of 16 than of 11.
        let flops = max(1, model.flopsPerImage)
        sliceImages = max(1, min(16, max((64 << 10) / max(1, largest), (16_000_000 + flops - 1) / flops)))
        var slots = Slots()
        slots.input = slots.slot(model.graph.inputs[0].name)
        for name in nodeParameters { slots.parameters.append((slots.slot(name), model.parameters[name]!)) }
        for (i, step) in self.steps.enumerated() {
            slots.reads.append(step.reads.map { slots.slot($0) })
            slots.output.append(slots.slot(step.output))
            slots.releases.append(releases[i].map { slots.slot($0) })
        }
        for name in model.graph.outputs { _ = slots.slot(name) }
        for name in kept { _ = slots.slot(name) }
        let (unpadded, padOf) = (self.unpadded, self.pads)
        slots.pad = slots.names.map { unpadded.contains($0) ? 0 : padOf[$0] ?? 0 }
        slots.quant = slots.names.map { model.activationQuant[$0] }
        self.slots = slots
        let planned = self.steps
        stages = Self.stages(
            slots: slots, budget: lateSlices ? Self.lateBudget : 0,
            sizes: planned.indices.map { i in
                // Floats as stored: channels in blocks of 8, and a blocked value's zero halo.
                guard let s = shape(planned[i].output) else { return 0 }
                guard s.count == 4 else { return s.reduce(1, *) }
                let p = slots.pad[slots.output[i]]
                return (s[1] + 7) / 8 * 8 * (s[2] + 2 * p) * (s[3] + 2 * p)
            },
            convolutions: planned.map {
                switch $0 {
                case .conv, .direct, .pointwise: true
                default: false
                }
            }, sliceImages: sliceImages,
            lasting: (model.graph.outputs + kept).compactMap { slots.index[$0] })
    }

    /// Whether 3×3 stride-1 convolutions run by Winograd's minimal filtering (`--debug-winograd off`
    /// turns it off, to compare with the direct kernel; KernelPolicy).
    public static var winograd: Bool { KernelPolicy.winograd != .off }

    /// The intermediate values `run(_:keeping:)` may return.
    public let kept: Set<String>

    /// Every value a step reads or writes numbered, and what `runSlice` needs per value and per
    /// step by number: at batch 1 on two threads, looking values up by name (hashing, and
    /// retaining and releasing the strings) cost more than a microsecond a step.
    struct Slots {
        /// Each slot's value name, and the slot of each name.
        var names: [String] = []
        var index: [String: Int] = [:]
        /// The graph input's slot, and the parameters that steps run as graph nodes read.
        var input = 0
        var parameters: [(Int, Tensor)] = []
        /// Per slot: the halo a blocked copy is made with, and the activation grid of a
        /// quantize-checked model.
        var pad: [Int] = []
        var quant: [ActivationQuant?] = []
        /// Per step: the slots of its `reads`, in order, its output's slot, and the slots it
        /// reads last.
        var reads: [[Int]] = []
        var output: [Int] = []
        var releases: [[Int]] = []

        mutating func slot(_ name: String) -> Int {
            if let s = index[name] { return s }
            index[name] = names.count
            names.append(name)
            return names.count - 1
        }
    }
    let slots: Slots

    /// The packed filters of each depthwise `.conv` step, by step index.
    let depthwiseFilters: [Depthwise.BlockedFilters?]
    /// The inverted residual blocks a batch of one image runs in halves, at their first step
    /// (InferencePlan+Halves.swift).
    let halved: [HalvedBlock?]

    /// Images per slice of a batch (fixed per model, so results do not depend on thread count).
    public let sliceImages: Int
    /// Where a batch's later layers switch to slices of more images (InferencePlan+Stages.swift).
    let stages: [Stage]
    /// The largest zero halo of a blocked activation (`pads`).
    public let halo: Int
    /// Per blocked activation, its zero halo: the largest padding of a convolution reading it (or
    /// of one reading an activation that shares its buffer); 0 where none is listed.
    let pads: [String: Int]
    /// Blocked activations stored with no halo (read by blocked linear layers only).
    let unpadded: Set<String>

    /// Whether a convolution runs as `.pointwise`: 1×1, stride 1, unpadded, over a map of at most
    /// 16 pixels, where the direct kernel's row tiles (a row of 4 pixels on a 4 × 4 map) read the
    /// weights once per output row. mobilenetv2's 320 → 1280 head at 4 × 4: 0.38 ms direct. On
    /// 8 × 8 maps the row tiles won once the direct kernel stopped retaining its tile lists per
    /// tile (mobilenetv2 and efficientnet-lite0 at 32 × 32, mnasnet at 64 × 64; docs/performance.md).
    static func pointwisePays(weight: [Int], window: Window, output: [Int]?) -> Bool {
        guard let output, output.count == 4, weight[2] == 1, weight[3] == 1 else { return false }
        return window.stride == (1, 1) && window.pads.allSatisfy { $0 == 0 } && output[2] * output[3] <= 16
    }

    /// Whether a max-pool node takes 2×2 windows at stride 2, unpadded, in floor mode.
    static func isPool2x2(_ node: Graph.Node) -> Bool {
        node.ints("kernel") == [2, 2] && node.ints("stride") == [2, 2] && node.ints("pads").allSatisfy { $0 == 0 }
            && node.ints("dilation").allSatisfy { $0 == 1 } && !node.bool("ceil_mode")
    }

    /// A linear weight `[O, C·H·W]` over NCHW-flattened inputs, its columns reordered for inputs
    /// flattened from the blocked layout without a halo, `[⌈C/8⌉][H][W][8]`: column
    /// ((b·H + i)·W + j)·8 + l takes column (c·H + i)·W + j for c = 8b + l, and is zero for c ≥ C.
    static func blockedColumns(_ weight: Tensor, channels c: Int, h: Int, w: Int) -> Tensor {
        let (o, k) = (weight.shape[0], weight.shape[1])
        let blocks = (c + 7) / 8
        let wide = blocks * h * w * 8
        let y = Tensor(zeros: [o, wide])
        for r in 0..<o {
            let (src, dst) = (weight.pointer + r * k, y.pointer + r * wide)
            for ch in 0..<c {
                for p in 0..<(h * w) { dst[((ch / 8) * h * w + p) * 8 + ch % 8] = src[ch * h * w + p] }
            }
        }
        return y
    }

    /// Raw outputs (logits) for a batch; `timing`, when given, receives each step's index and seconds
    /// (where the workers take slices of the batch, its seconds on each worker added up and divided
    /// by their count: a share of the pass's wall time).
    ///
    /// The batch runs in slices of `sliceImages`, each through the whole network: the workers
    /// take whole slices (one thread each), and a single slice splits its layers over the workers.
    public func run(_ x: Tensor, timing: ((Int, Double) -> Void)? = nil) throws -> Tensor {
        try run(x, names: [model.graph.outputs[0]], timing: timing)[0]
    }

    /// The graph output and the named intermediate values (each one of `kept`) for a batch.
    public func run(_ x: Tensor, keeping names: [String]) throws -> (output: Tensor, values: [String: Tensor]) {
        let missing = names.filter { !kept.contains($0) }
        guard missing.isEmpty else {
            throw NNError("the plan was not built to keep \(missing.joined(separator: ", ")) (InferencePlan(model, keep:))")
        }
        let all = try run(x, names: [model.graph.outputs[0]] + names, timing: nil)
        return (all[0], Dictionary(zip(names, all.dropFirst()), uniquingKeysWith: { a, _ in a }))
    }

    func run(_ x: Tensor, names: [String], timing: ((Int, Double) -> Void)?) throws -> [Tensor] {
        let expected = model.graph.inputs[0].shape
        guard x.rank == expected.count, zip(x.shape.dropFirst(), expected.dropFirst()).allSatisfy({ $0 == $1 }) else {
            throw NNError("input \(x.shape) does not match the model input \(expected) (first dimension is the batch)", code: .dataMismatch)
        }
        let n = x.shape[0]
        try model.checkBatchFits(n)
        var slices = (n + sliceImages - 1) / sliceImages
        if slices <= 1 { return try runSlice(x, names: names, timing: timing, batchOfOne: n == 1) }
        // An even count of equal slices, so that two workers finish together (64 images: 6 × 10–11
        // rather than 4 × 13 + 12). It depends on the batch alone, never on the thread count.
        if slices % 2 == 1 && n >= slices + 1 { slices += 1 }
        let per = x.count / n
        func slice(_ i: Int) throws -> Tensor {
            let lo = n * i / slices
            let count = n * (i + 1) / slices - lo
            let part = Tensor(uninitialized: [count] + Array(x.shape.dropFirst()))
            part.pointer.update(from: x.pointer + lo * per, count: count * per)
            return part
        }
        let exits = names.map { slots.index[$0]! }
        var sliced = [[SliceValue]](repeating: [], count: slices)
        // At least two groups, so that a small batch still keeps two workers busy.
        let cuts = stages.filter { (n + $0.images - 1) / $0.images < slices && n >= 2 * $0.images }
        if let top = cuts.last, exits.allSatisfy({ top.late.contains($0) }) {
            // Each worker takes a group of the last cut's images through the whole network
            // (InferencePlan+Stages.swift).
            var groups = (n + top.images - 1) / top.images
            if groups % 2 == 1 && n >= groups + 1 { groups += 1 }
            sliced = [[SliceValue]](repeating: [], count: groups)
            try sliced.withUnsafeMutableBufferPointer { out in
                try eachSlice(groups, timing: timing) { j, timing in
                    let group = Self.images(n * j / groups..<n * (j + 1) / groups, of: [(0, .plain(x))]).plain
                    let entry = try value(atCut: cuts.count - 1, of: cuts, group, timing: timing)
                    out[j] = try runSteps(top.step..<steps.count, entry: (top.slot, entry), exits: exits, timing: timing, batchOfOne: false)
                }
            }
        } else {
            try sliced.withUnsafeMutableBufferPointer { out in
                try eachSlice(slices, timing: timing) { i, timing in
                    out[i] = try runSlice(try slice(i), names: names, timing: timing, batchOfOne: false).map { .plain($0) }
                }
            }
        }
        return names.indices.map { k in
            let parts = sliced.map { $0[k].plain }
            let y = Tensor(uninitialized: [n] + Array(parts[0].shape.dropFirst()))
            var offset = 0
            for p in parts {
                (y.pointer + offset).update(from: p.pointer, count: p.count)
                offset += p.count
            }
            return y
        }
    }

    /// Runs `body` for each of `count` slices: in order on the calling thread on one worker; else
    /// each worker, on one thread, takes the next slice as it finishes one (a core slowed by a
    /// neighbour then takes fewer). Which worker computes a slice does not change its result.
    ///
    /// Timing runs the same schedule: each worker adds up its own steps' seconds, and `timing`
    /// then receives, on the calling thread, each step's total over the workers divided by their
    /// count, so the steps' times add up to about the pass's wall time.
    func eachSlice(
        _ count: Int, timing: ((Int, Double) -> Void)?, _ body: (Int, ((Int, Double) -> Void)?) throws -> Void
    ) throws {
        let workers = Parallel.threads
        // Each worker's activations come from its own buffers by size class: a layer wider than
        // any buffer freed so far in the slice gets the one just released, not one written a
        // slice ago (Storage.withSizeClasses).
        if workers == 1 {
            try Storage.withSizeClasses { for i in 0..<count { try body(i, timing) } }
            return
        }
        let next = WorkCounter()
        let lock = NSLock()
        var failure: Error?
        // Seconds by worker and step (nil: the step did not run).
        var seconds = [[Double?]](repeating: [Double?](repeating: nil, count: steps.count), count: timing == nil ? 0 : workers)
        seconds.withUnsafeMutableBufferPointer { table in
            let seconds = table
            Parallel.chunks(workers, parts: workers) { worker, _ in
                let before = Parallel.threads
                Parallel.configure(threads: 1)
                defer { Parallel.configure(threads: before) }
                let mine: ((Int, Double) -> Void)? =
                    timing == nil ? nil : { step, s in seconds[worker][step] = (seconds[worker][step] ?? 0) + s }
                while true {
                    let i = next.take()
                    guard i < count else { return }
                    do {
                        try Storage.withSizeClasses { try body(i, mine) }
                    } catch {
                        lock.lock()
                        failure = failure ?? error
                        lock.unlock()
                    }
                }
            }
        }
        if let failure { throw failure }
        guard let timing else { return }
        for step in steps.indices {
            let times = seconds.compactMap { $0[step] }
            if !times.isEmpty { timing(step, times.reduce(0, +) / Double(workers)) }
        }
    }

    func runSlice(_ x: Tensor, names: [String], timing: ((Int, Double) -> Void)?, batchOfOne: Bool) throws -> [Tensor] {
        let input = slots.quant[slots.input].map { $0.applied(to: x) } ?? x
        return try runSteps(
            steps.indices, entry: (slots.input, .plain(input)), exits: names.map { slots.index[$0]! }, timing: timing,
            batchOfOne: batchOfOne
        ).map(\.plain)
    }

    /// A value passed between parts of a pass: NCHW, or channel-blocked.
    enum SliceValue {
        case plain(Tensor)
        case blocked(BlockedTensor)

        var plain: Tensor {
            switch self {
            case .plain(let t): return t
            case .blocked(let b): return b.plain()
            }
        }
        var images: Int {
            switch self {
            case .plain(let t): return t.shape[0]
            case .blocked(let b): return b.n
            }
        }
    }

    /// Runs `range` of the steps on a slice, from the value `entry` (a slot and its value, already
    /// on its activation grid), and returns the values of the slots `exits`.
    func runSteps(
        _ range: Range<Int>, entry: (slot: Int, value: SliceValue), exits: [Int], timing: ((Int, Double) -> Void)?, batchOfOne: Bool
    ) throws -> [SliceValue] {
        let tape = Tape(recording: false)
        let slots = self.slots
        // Values by slot: NCHW values on the tape, channel-blocked ones beside them. Convolutions,
        // additions and max pools pass channel-blocked activations to each other; a consumer that
        // needs NCHW gets a converted copy (made once per value).
        var values = [Var?](repeating: nil, count: slots.names.count)
        var blocked = [BlockedTensor?](repeating: nil, count: slots.names.count)
        switch entry.value {
        case .plain(let t): values[entry.slot] = tape.leaf(t)
        case .blocked(let b): blocked[entry.slot] = b
        }
        func store(_ s: Int, _ y: Tensor) { values[s] = tape.leaf(slots.quant[s].map { $0.applied(to: y) } ?? y) }
        /// Conv and add outputs are fresh tensors: their grid rounding happens in place.
        func storeFresh(_ s: Int, _ y: Tensor) {
            slots.quant[s]?.applyInPlace(y)
            values[s] = tape.leaf(y)
        }
        func storeBlocked(_ s: Int, _ y: BlockedTensor) {
            slots.quant[s]?.applyInPlace(y.data)
            blocked[s] = y
        }
        func plain(_ s: Int) -> Tensor {
            if let v = values[s] { return tape.value(v) }
            let t = blocked[s]!.plain()
            values[s] = tape.leaf(t)
            return t
        }
        func block(_ s: Int) -> BlockedTensor {
            if let b = blocked[s] { return b }
            let b = BlockedTensor(plain(s), pad: slots.pad[s])
            blocked[s] = b
            return b
        }
        for (s, t) in slots.parameters { values[s] = tape.leaf(t) }
        var rng = RandomSource(seed: 0)
        // One image on several workers: the steps `tuneThreads` found faster on this thread alone.
        let threads = Parallel.threads
        let alone = entry.value.images == 1 && threads > 1 ? solo.steps : []
        func release(_ index: Int) {
            for s in slots.releases[index] {
                if let v = values[s] {
                    tape.discard(v)
                    values[s] = nil
                }
                blocked[s] = nil
            }
        }
        // A halved block's three steps run as one at its first; the other two report the times
        // of their parts (the calling thread's) and release what they read last.
        var phases = [Double](repeating: 0, count: 3)
        var pending = 0
        for index in range {
            if pending > 0 {
                if let timing { timing(index, pending <= 2 ? phases[3 - pending] : 0) }
                release(index)
                pending -= 1
                continue
            }
            let single = index < alone.count && alone[index]
            if single { Parallel.configure(threads: 1) }
            var t0 = timespec()
            if timing != nil { clock_gettime(CLOCK_MONOTONIC, &t0) }
            var reported: Double?
            defer {
                if single { Parallel.configure(threads: threads) }
                if let timing {
                    var t1 = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    timing(index, reported ?? Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9)
                }
                release(index)
            }
            let (ins, out) = (slots.reads[index], slots.output[index])
            if batchOfOne, KernelPolicy.halvedBlocks, let halves = halved[index] {
                let project = index + 2
                let pads = (slots.pad[out], slots.pad[slots.output[index + 1]], slots.pad[slots.output[project]])
                // Consecutive blocks on two workers: one parallel region (not timed per step). A
                // step chosen to run alone has set the workers to one: its block runs as below.
                if timing == nil, halves.continues, Parallel.threads == 2 || Parallel.threads == 3 {
                    var run = [halves]
                    while run.last!.continues, let next = halved[run.last!.first + 3] { run.append(next) }
                    let last = run.last!.first + 2
                    let shortcut = halves.residual ? block(slots.reads[project][1]) : nil
                    let y = try HalvedBlock.region(
                        run, block(ins[0]), shortcut: shortcut,
                        pads: run.map { b in
                            (slots.pad[slots.output[b.first]], slots.pad[slots.output[b.first + 1]], slots.pad[slots.output[b.first + 2]])
                        })
                    storeBlocked(slots.output[last], y)
                    pending = last - index
                    continue
                }
                var mark: ((Int) -> Void)?
                var last = t0
                if timing != nil {
                    phases = [0, 0, 0]
                    mark = { k in
                        var now = timespec()
                        clock_gettime(CLOCK_MONOTONIC, &now)
                        phases[k] += Double(now.tv_sec - last.tv_sec) + Double(now.tv_nsec - last.tv_nsec) * 1e-9
                        last = now
                    }
                }
                let shortcut = halves.residual ? block(slots.reads[project][1]) : nil
                storeBlocked(slots.output[project], try halves.run(block(ins[0]), shortcut: shortcut, pads: pads, mark: mark))
                // What follows the calling thread's last part (waiting for the other half, the sum)
                // counts with the projection.
                mark?(2)
                reported = phases[0]
                pending = 2
                continue
            }
            switch steps[index] {
            case .direct(_, let conv, let function, let residual, _):
                let epilogue = Epilogue(function, residual: residual == nil ? nil : block(ins[1]))
                let y =
                    conv.inBlock == 8
                    ? try conv(block(ins[0]), epilogue, outPad: slots.pad[out])
                    : try conv(plain: plain(ins[0]), epilogue, outPad: slots.pad[out])
                storeBlocked(out, y)
            case .pointwise(_, let op, let function, let residual, _):
                let r = residual == nil ? nil : block(ins[1])
                storeBlocked(out, try Self.pointwise(block(ins[0]), op, Epilogue(function), residual: r, outPad: slots.pad[out]))
            case .directPool(_, let conv, let function, _):
                storeFresh(out, try conv.pooled(plain: plain(ins[0]), Epilogue(function)))
            case .conv(_, let weight, let bias, let window, let groups, let function, _):
                let epilogue = Epilogue(function)
                if let b = blocked[ins[0]], values[ins[0]] == nil, groups == b.channels,
                    Depthwise.blockedForwardApplies(b, weight: weight.shape, window)
                {
                    let filters = depthwiseFilters[index] ?? Depthwise.BlockedFilters(weight: weight, bias: bias)
                    storeBlocked(out, try Depthwise.blocked(b, filters: filters, window, epilogue, outPad: slots.pad[out]))
                    continue
                }
                let x = plain(ins[0])
                if Depthwise.applies(input: x.shape, weight: weight.shape, groups: groups) {
                    storeFresh(out, try Depthwise.forward(x: x, weight: weight, bias: bias, window, epilogue))
                    continue
                }
                let y = try Conv2d.forward(x: x, weight: weight, bias: bias, window, groups: groups)
                epilogue.apply(to: y)
                storeFresh(out, y)
            case .scaleChannels:
                if let b = blocked[ins[0]], values[ins[0]] == nil {
                    // In place when this step is the input's last reader.
                    storeBlocked(out, try Broadcast.scaleChannels(b, plain(ins[1]), inPlace: slots.releases[index].contains(ins[0])))
                } else {
                    storeFresh(out, try Broadcast.forward(.mul, plain(ins[0]), plain(ins[1])))
                }
            case .activate(_, let f, _):
                let t: Tensor
                if let b = blocked[ins[0]], values[ins[0]] == nil, f.preservesZero {
                    t = b.data
                    storeBlocked(out, b)
                } else {
                    t = plain(ins[0])
                    storeFresh(out, t)
                }
                // In place, in parallel where a batch of one leaves the workers to the layers.
                Epilogue(.activation(f)).apply(to: t)
            case .linear(_, let op, let function, _):
                storeFresh(out, try op(plain(ins[0]), Epilogue(function)))
            case .pooledLinear(_, let op, let function, _):
                let pooled = block(ins[0]).globalAveragePool()
                storeFresh(out, try op(try pooled.reshaped([pooled.shape[0], pooled.shape[1]]), Epilogue(function)))
            case .blockedLinear(_, let op, let function, _):
                var x = blocked[ins[0]] ?? BlockedTensor(plain(ins[0]), pad: 0)
                if x.pad != 0 { x = x.withPad(0) }
                storeFresh(out, try op(try x.data.reshaped([x.n, x.data.count / max(1, x.n)]), Epilogue(function)))
            case .gather(_, let sources, _):
                storeBlocked(out, try BlockedTensor.gatherChannels(ins.map(block), sources, outPad: slots.pad[out]))
            case .add(_, _, let relu, _):
                if blocked[ins[0]] != nil || blocked[ins[1]] != nil {
                    storeBlocked(out, try BlockedTensor.add(block(ins[0]), block(ins[1]), relu: relu))
                    continue
                }
                let y = try Elementwise.add(plain(ins[0]), plain(ins[1]))
                if relu { Elementwise.reluInPlace(y) }
                storeFresh(out, y)
            case .node(let node):
                if let x = blocked[ins[0]], values[ins[0]] == nil {
                    switch node.op {
                    case .maxpool:
                        let g = Window(
                            kernel: node.ints("kernel"), stride: node.ints("stride"), pads: node.ints("pads"),
                            dilation: node.ints("dilation"), ceilMode: node.bool("ceil_mode"))
                        storeBlocked(out, try x.maxPool(g, outPad: slots.pad[out]))
                        continue
                    case .globalavgpool:
                        storeFresh(out, x.globalAveragePool())
                        continue
                    case .relu:
                        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad)
                        y.data.pointer.update(from: x.data.pointer, count: x.data.count)
                        y.reluInPlace()
                        storeBlocked(out, y)
                        continue
                    default: break
                    }
                }
                // The graph's own forward reads its inputs by name.
                var named: [String: Var] = [:]
                for (name, s) in zip(node.inputs, ins) {
                    if values[s] == nil && blocked[s] != nil { _ = plain(s) }
                    if let v = values[s] { named[name] = v }
                }
                store(out, tape.value(try model.apply(node, tape: tape, values: named, training: false, rng: &rng)))
            }
        }
        return exits.map { s in blocked[s].map { .blocked($0) } ?? .plain(plain(s)) }
    }

    /// `.pointwise`: blocked x → pixel rows [N·H·W, C] → the linear kernel → blocked output with
    /// halo `outPad`, the residual added and the activation applied on the way back.
    static func pointwise(_ x: BlockedTensor, _ op: PackedLinear, _ epilogue: Epilogue, residual: BlockedTensor?, outPad: Int) throws
        -> BlockedTensor
    {
        // The kernel adds the residual and applies the activation in registers where it is a
        // ReLU or ReLU6 (or none), storing straight into the blocked layout; another activation
        // runs over each output row while it is in cache, after the residual.
        let fused = Epilogue(epilogue.function, residual: residual)
        if PackedLinear.storesBlocked(fused) {
            return try op(x.pixelRows(), fused, n: x.n, h: x.h, w: x.w, pad: outPad)
        }
        let y = try op(x.pixelRows(), residual == nil ? epilogue : .none)
        return BlockedTensor(
            pixelRows: y, n: x.n, h: x.h, w: x.w, pad: outPad, residual: residual,
            activation: residual == nil ? .none : Epilogue(epilogue.function))
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
