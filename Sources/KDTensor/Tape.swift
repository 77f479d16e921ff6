/// A handle to a value on a `Tape`.
public struct Var: Hashable, Sendable {
    public let id: Int
}

/// Reverse-mode autograd over a closed set of ops. Each op computes its forward value here and
/// records what its backward rule (in `Tape+Backward.swift`, one case per op) needs.
///
/// Convolutions, batch norm, ReLU, additions and pooling keep their values and gradients in the
/// channel-blocked layout of the direct convolution (`BlockedTensor`, with a zero halo of
/// `halo`), so a convolutional network's passes convert to and from NCHW only at its ends; any
/// other reader of a value gets NCHW (`value(_:)`, converted once and kept).
///
///     let tape = Tape()
///     let x = tape.leaf(input)
///     let w = tape.leaf(weight, requiresGrad: true)
///     let y = try tape.linear(x, w, nil)
///     tape.backward([(y, dLdy)])
///     let dw = tape.grad(w)
public final class Tape {
    public enum Op {
        case linear(hasBias: Bool)
        case conv2d(Window, groups: Int, hasBias: Bool)
        /// On the direct kernel, output blocked; `plainInput`: the input was read as NCHW.
        case conv2dBlocked(Window, hasBias: Bool, plainInput: Bool)
        /// Depthwise (one filter per channel), blocked in and out; `input` is x with the halo its
        /// padding needs.
        case depthwiseBlocked(Window, hasBias: Bool, input: BlockedTensor)
        case batchnorm(BatchNorm.Saved)
        case batchnormBlocked(BlockedOps.BatchNormSaved)
        /// Batch norm and the ReLU after it, blocked; the output is the ReLU's.
        case batchnormReluBlocked(BlockedOps.BatchNormSaved, upper: Float)
        /// relu(a + b), blocked.
        case addReluBlocked
        /// relu(batchnorm(x) + r), blocked: a residual block's end in one pass.
        case batchnormAddReluBlocked(BlockedOps.BatchNormSaved)
        case relu
        case sigmoid
        case maxpool(argmax: [Int32])
        case maxpoolBlocked(argmax: [Int32])
        case avgpool(Window, countIncludePad: Bool)
        case globalAvgPool
        case globalAvgPoolBlocked
        case add
        case concat(axis: Int, sizes: [Int])
        case reshape
        case dropout(mask: Tensor)
        case softmax
        case splitLinear(inSplits: [Int], shared: Int)
        case l2normScale(groups: [Int], epsilon: Float, norms: [Float])
        case activation(Activation)
        /// An activation with f(0) = 0 over a blocked value, halo included (it stays zero).
        case activationBlocked(Activation)
        case broadcast(Broadcast.Op)
        case reduceMean(axes: [Int])
        case transpose(perm: [Int])
        case pad(pads: [Int])
        case slice(ranges: [Range<Int>])
        /// Channels of blocked values in one copy (concatenations, slices and shuffles along
        /// channels, composed): output channel j is `sources[j]`.
        case gatherBlocked(sources: [BlockedTensor.ChannelSource])
        case layerNorm(Shaping.LayerNormSaved, inner: Int, hasBias: Bool)
    }

    struct Record {
        // op, the tape ids it read, and the id it wrote
        let op: Op
        let inputs: [Int]
        let output: Int
    }

    /// A gradient in either layout.
    enum Grad {
        case plain(Tensor)
        case blocked(BlockedTensor)
    }

    /// Each value in NCHW, blocked, or both (a conversion made once is kept).
    var plainValues: [Tensor?] = []
    /// Synchronized batch norm in a data-parallel run: the ranks whose shares of the batch the
    /// training-mode statistics are over (nil: this process's batch alone).
    public var batchNormSync: World?
    var blockedValues: [BlockedTensor?] = []
    var needsGrad: [Bool] = []
    var grads: [Grad?] = []
    var records: [Record] = []
    /// False: ops compute values only (inference, or teachers during distillation).
    public let recording: Bool
    /// The zero halo of blocked values: the padding of a 3 × 3 convolution.
    public let halo = 1
    /// Whether convolutions run blocked (and with them the layers after them); false keeps every
    /// value in NCHW (the reference path the tests compare against).
    public let blocked: Bool

    public init(recording: Bool = true, blocked: Bool = true) {
        self.recording = recording
        self.blocked = blocked
    }

    public func leaf(_ t: Tensor, requiresGrad: Bool = false) -> Var {
        plainValues.append(t)
        blockedValues.append(nil)
        needsGrad.append(requiresGrad && recording)
        grads.append(nil)
        return Var(id: plainValues.count - 1)
    }

    /// The value in NCHW.
    public func value(_ v: Var) -> Tensor {
        if let t = plainValues[v.id] { return t }
        let t = blockedValues[v.id]!.plain()
        plainValues[v.id] = t
        return t
    }

    /// The value in the blocked layout.
    public func blockedValue(_ v: Var) -> BlockedTensor {
        if let b = blockedValues[v.id] { return b }
        let t = plainValues[v.id]!
        let b = BlockedTensor(t.rank == 4 ? t : (try? t.reshaped(t.shape + Array(repeating: 1, count: max(0, 4 - t.rank)))) ?? t, pad: halo)
        blockedValues[v.id] = b
        return b
    }

    /// The names of the ops recorded for the backward pass, in order (as profiles name them).
    public var recordedOps: [String] { records.map(\.op.name) }

    /// Whether the value exists in the blocked layout (without converting it).
    public func isBlocked(_ v: Var) -> Bool { blockedValues[v.id] != nil }

    /// The value's NCHW shape.
    public func shape(_ v: Var) -> [Int] { plainValues[v.id]?.shape ?? blockedValues[v.id]!.shape }

    public func grad(_ v: Var) -> Tensor? {
        switch grads[v.id] {
        case .plain(let t): t
        case .blocked(let b): b.plain()
        case nil: nil
        }
    }

    public func requiresGrad(_ v: Var) -> Bool { needsGrad[v.id] }

    /// Drops the tape's reference to a value nothing will read again (inference: its buffer goes
    /// back to the pool while it is still in the cache, for the next layer's output).
    public func discard(_ v: Var) {
        precondition(!recording, "a recording tape keeps its values for the backward pass")
        plainValues[v.id] = Self.discarded
        blockedValues[v.id] = nil
    }

    private static let discarded = Tensor(zeros: [0])

    func push(_ t: Tensor, _ op: @autoclosure () -> Op, _ inputs: [Var]) -> Var {
        record(plain: t, blocked: nil, op(), inputs)
    }

    func push(_ b: BlockedTensor, _ op: @autoclosure () -> Op, _ inputs: [Var]) -> Var {
        record(plain: nil, blocked: b, op(), inputs)
    }

    private func record(plain: Tensor?, blocked: BlockedTensor?, _ op: @autoclosure () -> Op, _ inputs: [Var]) -> Var {
        let track = recording && inputs.contains { needsGrad[$0.id] }
        plainValues.append(plain)
        blockedValues.append(blocked)
        needsGrad.append(track)
        grads.append(nil)
        let out = plainValues.count - 1
        if track { records.append(Record(op: op(), inputs: inputs.map(\.id), output: out)) }
        return Var(id: out)
    }

    // MARK: Forward of each op

    /// y = x·Wᵀ + b over x's last axis (any leading dimensions).
    public func linear(_ x: Var, _ w: Var, _ b: Var?) throws -> Var {
        let xv = value(x)
        let lead = Array(xv.shape.dropLast())
        let flat = xv.rank == 2 ? xv : try xv.reshaped([lead.reduce(1, *), xv.shape.last ?? 1])
        var y = try Linear.forward(x: flat, weight: value(w), bias: b.map(value))
        if xv.rank != 2 { y = try y.reshaped(lead + [y.shape[1]]) }
        return push(y, .linear(hasBias: b != nil), [x, w] + (b.map { [$0] } ?? []))
    }

    public func conv2d(_ x: Var, _ w: Var, _ b: Var?, _ g: Window, groups: Int) throws -> Var {
        let weight = value(w)
        _ = try Conv2d.outputShape(x: shape(x), weight: weight.shape, g, groups: groups)
        if blocked && Conv2d.useFast && DirectConv.applies(groups: groups) {
            // Blocked in and out; a network's first layer (a few NCHW channels) reads NCHW.
            let plainInput = !isBlocked(x) && DirectConv.inBlock(forChannels: weight.shape[1]) == 1
            let s = shape(x)
            if !plainInput, PointwiseGEMM.applies(g, groups: groups, h: s[2], w: s[3]) {
                let y = PointwiseGEMM.forward(blockedValue(x), weight: weight, bias: b.map(value), outPad: halo)
                return push(y, .conv2dBlocked(g, hasBias: b != nil, plainInput: false), [x, w] + (b.map { [$0] } ?? []))
            }
            let conv = DirectConv(weight: weight, bias: b.map(value), window: g, inBlock: plainInput ? 1 : 8)
            let y = plainInput ? try conv(plain: value(x), outPad: halo) : try conv(blockedValue(x), outPad: halo)
            return push(y, .conv2dBlocked(g, hasBias: b != nil, plainInput: plainInput), [x, w] + (b.map { [$0] } ?? []))
        }
        if blocked && Conv2d.useFast && groups > 1 && weight.shape[1] == 1 && weight.shape[0] == groups && shape(x).count == 4 {
            // Depthwise on the blocked layout the pointwise convolutions around it use; the input
            // gets a wider halo where the padding needs one (5×5 filters).
            var xb = blockedValue(x)
            if xb.pad < g.pads.max() ?? 0 { xb = xb.withPad(g.pads.max() ?? 0) }
            if Depthwise.blockedApplies(xb, weight: weight.shape, g) {
                let y = try Depthwise.blocked(xb, weight: weight, bias: b.map(value), g, outPad: halo)
                return push(y, .depthwiseBlocked(g, hasBias: b != nil, input: xb), [x, w] + (b.map { [$0] } ?? []))
            }
        }
        let y = try Conv2d.forward(x: value(x), weight: weight, bias: b.map(value), g, groups: groups)
        return push(y, .conv2d(g, groups: groups, hasBias: b != nil), [x, w] + (b.map { [$0] } ?? []))
    }

    /// Batch norm; in training mode the running statistics (plain tensors) are updated in place.
    public func batchnorm(
        _ x: Var, scale: Var, bias: Var, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float,
        training: Bool
    ) throws -> Var {
        if isBlocked(x) && shape(x).count == 4 {
            let (y, saved) =
                training
                ? try BlockedOps.batchNormTraining(
                    blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                    epsilon: epsilon, momentum: momentum, sync: batchNormSync)
                : try BlockedOps.batchNormInference(
                    blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                    epsilon: epsilon)
            return push(y, .batchnormBlocked(saved), [x, scale, bias])
        }
        if training {
            let (y, saved) = try BatchNorm.forwardTraining(
                value(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                epsilon: epsilon, momentum: momentum, sync: batchNormSync)
            return push(y, .batchnorm(saved), [x, scale, bias])
        }
        let y = try BatchNorm.forwardInference(
            value(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
            epsilon: epsilon)
        // Frozen statistics: backward is a per-channel affine map, expressed as a saved batchnorm
        // whose x̂ is the normalised input and whose inverse std is the running one.
        let xv = value(x)
        let c = xv.shape[1]
        let hw = xv.shape.dropFirst(2).reduce(1, *)
        let inv = (0..<c).map { 1 / (runningVar.pointer[$0] + epsilon).squareRoot() }
        let xhat = Tensor(uninitialized: xv.shape)
        for i in 0..<xv.count {
            let ch = (i / hw) % c
            xhat.pointer[i] = (xv.pointer[i] - runningMean.pointer[ch]) * inv[ch]
        }
        return push(y, .batchnorm(BatchNorm.Saved(xhat: xhat, invStd: inv, frozen: true)), [x, scale, bias])
    }

    /// relu(batchnorm(x)) in one pass where x is blocked (the batch norm's own output is not kept:
    /// its backward rule needs only x, and the ReLU's only its output); else the two ops. A finite
    /// `upper` clips the output there too: ReLU6 is clip(0, 6), upper 6.
    public func batchnormRelu(
        _ x: Var, scale: Var, bias: Var, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float,
        training: Bool, upper: Float = .infinity
    ) throws -> Var {
        guard isBlocked(x) && shape(x).count == 4 else {
            let y = try batchnorm(
                x, scale: scale, bias: bias, runningMean: runningMean, runningVar: runningVar, epsilon: epsilon, momentum: momentum,
                training: training)
            return upper.isFinite ? activation(y, .clip(min: 0, max: upper)) : relu(y)
        }
        let (y, saved) =
            training
            ? try BlockedOps.batchNormTraining(
                blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                epsilon: epsilon, momentum: momentum, relu: true, upper: upper, sync: batchNormSync)
            : try BlockedOps.batchNormInference(
                blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                epsilon: epsilon, relu: true, upper: upper)
        return push(y, .batchnormReluBlocked(saved, upper: upper), [x, scale, bias])
    }

    /// relu(batchnorm(x) + residual) in one pass where x is blocked; else the three ops.
    public func batchnormAddRelu(
        _ x: Var, scale: Var, bias: Var, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float,
        training: Bool, residual: Var
    ) throws -> Var {
        guard isBlocked(x) && shape(x).count == 4 && shape(residual) == shape(x) else {
            let y = try batchnorm(
                x, scale: scale, bias: bias, runningMean: runningMean, runningVar: runningVar, epsilon: epsilon, momentum: momentum,
                training: training)
            return try addRelu(y, residual)
        }
        let (y, saved) =
            training
            ? try BlockedOps.batchNormTraining(
                blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                epsilon: epsilon, momentum: momentum, relu: true, residual: blockedValue(residual), sync: batchNormSync)
            : try BlockedOps.batchNormInference(
                blockedValue(x), scale: value(scale), bias: value(bias), runningMean: runningMean, runningVar: runningVar,
                epsilon: epsilon, relu: true, residual: blockedValue(residual))
        return push(y, .batchnormAddReluBlocked(saved), [x, scale, bias, residual])
    }

    /// relu(a + b) in one pass where an operand is blocked; else the two ops.
    public func addRelu(_ a: Var, _ b: Var) throws -> Var {
        guard (isBlocked(a) || isBlocked(b)) && shape(a).count == 4 && shape(a) == shape(b) else { return relu(try add(a, b)) }
        return push(try BlockedTensor.add(blockedValue(a), blockedValue(b), relu: true), .addReluBlocked, [a, b])
    }

    public func relu(_ x: Var) -> Var {
        if isBlocked(x) { return push(BlockedOps.relu(blockedValue(x)), .relu, [x]) }
        return push(Elementwise.relu(value(x)), .relu, [x])
    }

    public func sigmoid(_ x: Var) -> Var { push(Elementwise.sigmoid(value(x)), .sigmoid, [x]) }

    public func maxpool(_ x: Var, _ g: Window) throws -> Var {
        if isBlocked(x) {
            if !recording { return push(try blockedValue(x).maxPool(g, outPad: halo), .maxpoolBlocked(argmax: []), [x]) }
            let (y, argmax) = try BlockedOps.maxPoolTraining(blockedValue(x), g)
            return push(y, .maxpoolBlocked(argmax: argmax), [x])
        }
        if !recording { return push(try Pooling.maxForwardInference(value(x), g), .maxpool(argmax: []), [x]) }
        let (y, argmax) = try Pooling.maxForward(value(x), g)
        return push(y, .maxpool(argmax: argmax), [x])
    }

    public func avgpool(_ x: Var, _ g: Window, countIncludePad: Bool) throws -> Var {
        let y = try Pooling.avgForward(value(x), g, countIncludePad: countIncludePad)
        return push(y, .avgpool(g, countIncludePad: countIncludePad), [x])
    }

    public func globalAvgPool(_ x: Var) throws -> Var {
        if isBlocked(x) { return push(blockedValue(x).globalAveragePool(), .globalAvgPoolBlocked, [x]) }
        return push(try Pooling.globalAvgForward(value(x)), .globalAvgPool, [x])
    }

    /// a + b; operands of different shapes broadcast (NumPy rules).
    public func add(_ a: Var, _ b: Var) throws -> Var {
        if shape(a) != shape(b) { return try broadcast(.add, a, b) }
        if (isBlocked(a) || isBlocked(b)) && shape(a).count == 4 {
            return push(try BlockedTensor.add(blockedValue(a), blockedValue(b), relu: false), .add, [a, b])
        }
        return push(try Elementwise.add(value(a), value(b)), .add, [a, b])
    }

    public func concat(_ xs: [Var], axis: Int) throws -> Var {
        let ts = xs.map(value)
        let ax = axis < 0 ? axis + ts[0].rank : axis
        return push(try Elementwise.concat(ts, axis: axis), .concat(axis: ax, sizes: ts.map { $0.shape[ax] }), xs)
    }

    public func reshape(_ x: Var, _ shape: [Int]) throws -> Var { push(try value(x).reshaped(shape), .reshape, [x]) }

    public func dropout(_ x: Var, ratio: Float, training: Bool, rng: inout RandomSource) -> Var {
        guard training, ratio > 0 else { return push(value(x), .reshape, [x]) }
        let (y, mask) = Elementwise.dropout(value(x), ratio: ratio, rng: &rng)
        return push(y, .dropout(mask: mask), [x])
    }

    /// Softmax over the last axis.
    public func softmax(_ x: Var) -> Var { push(Softmax.forward(value(x)), .softmax, [x]) }

    /// The Structurally Connected layer: block k maps its slice of x (plus the shared tail) through
    /// its own weights; outputs are concatenated.
    public func splitLinear(_ x: Var, blocks: [(w: Var, b: Var)], inSplits: [Int], shared: Int) throws -> Var {
        let xv = value(x)
        guard xv.rank == 2, xv.shape[1] == inSplits.reduce(0, +) + shared, blocks.count == inSplits.count else {
            throw TensorError("split_linear input \(xv.shape) does not match in_splits \(inSplits) + shared \(shared)")
        }
        var outs: [Tensor] = []
        for (k, block) in blocks.enumerated() {
            let xk = SplitLinear.gather(xv, block: k, inSplits: inSplits, shared: shared)
            outs.append(try Linear.forward(x: xk, weight: value(block.w), bias: value(block.b)))
        }
        let y = try Elementwise.concat(outs, axis: 1)
        return push(y, .splitLinear(inSplits: inSplits, shared: shared), [x] + blocks.flatMap { [$0.w, $0.b] })
    }

    /// y_g = γ_g · x_g / max(‖x_g‖, ε) over consecutive feature groups; groups of one pass through.
    public func l2normScale(_ x: Var, gamma: Var, groups: [Int], epsilon: Float) throws -> Var {
        let xv = value(x)
        let gammas = value(gamma).count
        guard xv.rank == 2, groups.reduce(0, +) == xv.shape[1], gammas == groups.count || gammas == xv.shape[1] else {
            throw TensorError("l2norm_scale groups \(groups) do not match input \(xv.shape)")
        }
        let (y, norms) = SplitLinear.l2normScale(xv, gamma: value(gamma), groups: groups, epsilon: epsilon)
        return push(y, .l2normScale(groups: groups, epsilon: epsilon, norms: norms), [x, gamma])
    }
}

extension Tape {
    // MARK: Op set 2

    /// An activation; over a blocked value (halo included) where f(0) = 0 and f'(0) is finite, so
    /// the halo stays zero forward and backward.
    public func activation(_ x: Var, _ f: Activation) -> Var {
        if isBlocked(x) && f.runsOnHalo {
            let xb = blockedValue(x)
            let y = BlockedTensor(uninitialized: xb.n, channels: xb.channels, h: xb.h, w: xb.w, pad: xb.pad, zeroHalo: false)
            let (src, dst, count) = (xb.data.pointer, y.data.pointer, xb.data.count)
            Parallel.chunks(count, parts: count > 1 << 16 ? Parallel.threads : 1) { _, r in
                f.forward(src + r.lowerBound, dst + r.lowerBound, count: r.count)
            }
            return push(y, .activationBlocked(f), [x])
        }
        return push(f.forward(value(x)), .activation(f), [x])
    }

    /// a ∘ b with NumPy broadcasting.
    public func broadcast(_ op: Broadcast.Op, _ a: Var, _ b: Var) throws -> Var {
        push(try Broadcast.forward(op, value(a), value(b)), .broadcast(op), [a, b])
    }

    /// Mean over `axes` (normalised, distinct), keeping them as 1s or dropping them.
    public func reduceMean(_ x: Var, axes: [Int], keepdims: Bool) -> Var {
        push(Shaping.reduceMean(value(x), axes: axes, keepdims: keepdims), .reduceMean(axes: axes), [x])
    }

    public func transpose(_ x: Var, perm: [Int]) -> Var { push(Shaping.transpose(value(x), perm: perm), .transpose(perm: perm), [x]) }

    /// Constant padding, `pads` = begins then ends (≥ 0).
    public func pad(_ x: Var, pads: [Int], value v: Float) -> Var {
        push(Shaping.pad(value(x), pads: pads, value: v), .pad(pads: pads), [x])
    }

    /// Channels of blocked values in one copy: output channel j is channel `sources[j].channel`
    /// of `xs[sources[j].input]` (NCHW inputs are converted). A concatenation, slice or shuffle
    /// along channels, or several of them composed; the backward pass adds each output channel's
    /// gradient into its source's.
    public func gatherChannels(_ xs: [Var], _ sources: [BlockedTensor.ChannelSource]) throws -> Var {
        let y = try BlockedTensor.gatherChannels(xs.map(blockedValue), sources, outPad: halo)
        return push(y, .gatherBlocked(sources: sources), xs)
    }

    /// The block `ranges` of x (one range per axis).
    public func slice(_ x: Var, ranges: [Range<Int>]) -> Var { push(Shaping.slice(value(x), ranges: ranges), .slice(ranges: ranges), [x]) }

    /// Layer normalization over the trailing dimensions from `axis` on.
    public func layerNorm(_ x: Var, scale: Var, bias: Var?, axis: Int, epsilon: Float) throws -> Var {
        let xv = value(x)
        let inner = xv.shape[axis...].reduce(1, *)
        guard value(scale).count == inner, bias.map({ value($0).count == inner }) ?? true else {
            throw TensorError("layernorm scale \(value(scale).shape) does not match the normalised shape \(Array(xv.shape[axis...]))")
        }
        let (y, saved) = Shaping.layerNorm(xv, scale: value(scale), bias: bias.map(value), inner: inner, epsilon: epsilon)
        return push(y, .layerNorm(saved, inner: inner, hasBias: bias != nil), [x, scale] + (bias.map { [$0] } ?? []))
    }
}

extension BatchNorm.Saved {
    init(xhat: Tensor, invStd: [Float], frozen: Bool) {
        self.init(xhat: xhat, invStd: invStd)
        self.frozen = frozen
    }
}

extension Tape.Op {
    /// The op's name for profiles.
    var name: String {
        switch self {
        case .linear: "linear"
        case .conv2d, .conv2dBlocked: "conv2d"
        case .depthwiseBlocked: "conv2d (depthwise)"
        case .batchnorm, .batchnormBlocked: "batchnorm"
        case .batchnormReluBlocked(_, let upper): upper.isFinite ? "batchnorm+clip" : "batchnorm+relu"
        case .addReluBlocked: "add+relu"
        case .batchnormAddReluBlocked: "batchnorm+add+relu"
        case .relu: "relu"
        case .sigmoid: "sigmoid"
        case .maxpool, .maxpoolBlocked: "maxpool"
        case .avgpool: "avgpool"
        case .globalAvgPool, .globalAvgPoolBlocked: "globalavgpool"
        case .add: "add"
        case .concat: "concat"
        case .reshape: "reshape"
        case .dropout: "dropout"
        case .softmax: "softmax"
        case .splitLinear: "split_linear"
        case .l2normScale: "l2norm_scale"
        case .activation(let f), .activationBlocked(let f): f.kind.rawValue
        case .broadcast(let op): op.rawValue
        case .reduceMean: "reduce_mean"
        case .transpose: "transpose"
        case .pad: "pad"
        case .slice: "slice"
        case .gatherBlocked: "gather"
        case .layerNorm: "layernorm"
        }
    }
}
