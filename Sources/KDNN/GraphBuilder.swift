import KDBundle
import KDTensor

/// Builds graphs node by node, creating each layer's parameters with stable dotted names and
/// tracking shapes, so architectures read like a layer list.
public struct GraphBuilder {
    public enum InitKind { case weight(fanIn: Int, fanOut: Int), bias(fanIn: Int), ones, zeros, constant([Float]) }

    public private(set) var nodes: [Graph.Node] = []
    public private(set) var tensors: [(name: String, shape: [Int], kind: InitKind, buffer: Bool)] = []
    public private(set) var shapes: [String: [Int]] = [:]
    public let inputName = "input"

    public init(input: [Int]) { shapes[inputName] = [1] + input }

    public func shape(_ t: String) -> [Int] { shapes[t]! }
    public func channels(_ t: String) -> Int { shapes[t]![1] }

    mutating func add(_ name: String, _ op: Graph.Op, _ inputs: [String], _ attrs: [String: Value] = [:], shape: [Int]) -> String {
        nodes.append(Graph.Node(name: name, op: op, inputs: inputs, outputs: [name], attrs: attrs))
        shapes[name] = shape
        return name
    }

    mutating func param(_ name: String, _ shape: [Int], _ kind: InitKind, buffer: Bool = false) -> String {
        tensors.append((name, shape, kind, buffer))
        return name
    }

    static func ints(_ xs: [Int]) -> Value { .ints(xs.map(Int64.init)) }

    /// A convolution; `groups` > 1 splits the channels (groups = input channels = outputs: depthwise).
    public mutating func conv(
        _ name: String, _ x: String, out: Int, kernel: Int, stride: Int = 1, pad: Int = 0, groups: Int = 1, bias: Bool = true
    ) -> String {
        let s = shape(x)
        precondition(s[1] % groups == 0 && out % groups == 0, "\(name): \(s[1]) → \(out) channels do not split into \(groups) groups")
        let fanIn = s[1] / groups * kernel * kernel
        var inputs = [
            x,
            param("\(name).weight", [out, s[1] / groups, kernel, kernel], .weight(fanIn: fanIn, fanOut: out / groups * kernel * kernel)),
        ]
        if bias { inputs.append(param("\(name).bias", [out], .bias(fanIn: fanIn))) }
        let size = { (n: Int) in (n + 2 * pad - kernel) / stride + 1 }
        return add(
            name, .conv2d, inputs,
            [
                "stride": Self.ints([stride, stride]), "pads": Self.ints([pad, pad, pad, pad]), "dilation": Self.ints([1, 1]),
                "groups": .uint(UInt64(groups)),
            ],
            shape: [s[0], out, size(s[2]), size(s[3])])
    }

    /// An elementwise activation of op set 2 (ReLU6 is `.clip(min: 0, max: 6)`).
    public mutating func activation(_ name: String, _ x: String, _ f: Activation) -> String {
        nodes.append(Graph.Node(name: name, activation: f, input: x, output: name))
        shapes[name] = shape(x)
        return name
    }

    /// a · b with NumPy broadcasting (a squeeze-and-excitation gate: [N, C, H, W] · [N, C, 1, 1]).
    public mutating func mul(_ name: String, _ a: String, _ b: String) -> String {
        let (sa, sb) = (shape(a), shape(b))
        return add(name, .mul, [a, b], shape: zip(sa, sb).map { Swift.max($0, $1) })
    }

    /// Channels `range` of x (a channel split).
    public mutating func sliceChannels(_ name: String, _ x: String, _ range: Range<Int>) -> String {
        var s = shape(x)
        s[1] = range.count
        return add(
            name, .slice, [x],
            ["axes": Self.ints([1]), "starts": Self.ints([range.lowerBound]), "ends": Self.ints([range.upperBound])], shape: s)
    }

    /// ShuffleNet's channel shuffle: [N, C, H, W] → [N, g, C/g, H, W] → swap axes 1 and 2 → [N, C, H, W].
    public mutating func channelShuffle(_ name: String, _ x: String, groups g: Int) -> String {
        let s = shape(x)
        let split = add(
            "\(name).split", .reshape, [x], ["shape": Self.ints([0, g, s[1] / g, s[2], s[3]])], shape: [s[0], g, s[1] / g, s[2], s[3]])
        let swapped = add(
            "\(name).transpose", .transpose, [split], ["perm": Self.ints([0, 2, 1, 3, 4])], shape: [s[0], s[1] / g, g, s[2], s[3]])
        return add(name, .reshape, [swapped], ["shape": Self.ints([0, s[1], s[2], s[3]])], shape: s)
    }

    public mutating func batchnorm(_ name: String, _ x: String, epsilon: Double = 1e-5, momentum: Double = 0.1) -> String {
        let c = channels(x)
        let inputs = [
            x, param("\(name).weight", [c], .ones), param("\(name).bias", [c], .zeros),
            param("\(name).running_mean", [c], .zeros, buffer: true), param("\(name).running_var", [c], .ones, buffer: true),
        ]
        return add(name, .batchnorm, inputs, ["epsilon": .float(epsilon), "momentum": .float(momentum)], shape: shape(x))
    }

    public mutating func relu(_ name: String, _ x: String) -> String { add(name, .relu, [x], shape: shape(x)) }
    public mutating func sigmoid(_ name: String, _ x: String) -> String { add(name, .sigmoid, [x], shape: shape(x)) }

    public mutating func maxpool(_ name: String, _ x: String, kernel: Int, stride: Int, pad: Int = 0) -> String {
        let s = shape(x)
        return add(
            name, .maxpool, [x],
            [
                "kernel": Self.ints([kernel, kernel]), "stride": Self.ints([stride, stride]), "pads": Self.ints([pad, pad, pad, pad]),
                "dilation": Self.ints([1, 1]), "ceil_mode": .bool(false),
            ],
            shape: [s[0], s[1], (s[2] + 2 * pad - kernel) / stride + 1, (s[3] + 2 * pad - kernel) / stride + 1])
    }

    public mutating func globalAvgPool(_ name: String, _ x: String) -> String {
        let s = shape(x)
        return add(name, .globalavgpool, [x], shape: [s[0], s[1], 1, 1])
    }

    public mutating func flatten(_ name: String, _ x: String) -> String {
        let s = shape(x)
        return add(name, .flatten, [x], ["axis": .int(1)], shape: [s[0], s.dropFirst().reduce(1, *)])
    }

    public mutating func linear(_ name: String, _ x: String, out: Int, bias: Bool = true) -> String {
        let fanIn = shape(x)[1]
        var inputs = [x, param("\(name).weight", [out, fanIn], .weight(fanIn: fanIn, fanOut: out))]
        if bias { inputs.append(param("\(name).bias", [out], .bias(fanIn: fanIn))) }
        return add(name, .linear, inputs, shape: [shape(x)[0], out])
    }

    public mutating func addNode(_ name: String, _ a: String, _ b: String) -> String { add(name, .add, [a, b], shape: shape(a)) }

    public mutating func concat(_ name: String, _ xs: [String], axis: Int = 1) -> String {
        var s = shape(xs[0])
        s[axis] = xs.reduce(0) { $0 + shape($1)[axis] }
        return add(name, .concat, xs, ["axis": .int(Int64(axis))], shape: s)
    }

    public mutating func dropout(_ name: String, _ x: String, ratio: Double) -> String {
        add(name, .dropout, [x], ["ratio": .float(ratio)], shape: shape(x))
    }

    /// A fixed 1×1 stride-2 convolution that keeps the first channels and zero-pads the rest:
    /// He et al.'s option-A shortcut expressed in the closed op set. Its weight is frozen.
    public mutating func zeroPadShortcut(_ name: String, _ x: String, out: Int, stride: Int) -> String {
        let s = shape(x)
        let w = param("\(name).weight", [out, s[1], 1, 1], .zeros)
        identityWeights.insert(w)
        return add(
            name, .conv2d, [x, w],
            ["stride": Self.ints([stride, stride]), "pads": Self.ints([0, 0, 0, 0]), "dilation": Self.ints([1, 1]), "groups": .uint(1)],
            shape: [s[0], out, (s[2] - 1) / stride + 1, (s[3] - 1) / stride + 1])
    }

    /// Weights of option-A shortcuts: identity on the leading channels, frozen.
    public private(set) var identityWeights: Set<String> = []
    /// Parameters that are not trained (option-A shortcuts, fixed permutations).
    public private(set) var fixedWeights: Set<String> = []

    /// The Structurally Connected layer: block k reads its own `inSplits[k]` features plus the
    /// last `shared` ones and writes `outs[k]` outputs; outputs are concatenated in block order.
    public mutating func splitLinear(_ name: String, _ x: String, inSplits: [Int], shared: Int, outs: [Int]) -> String {
        var inputs = [x]
        for (k, (i, o)) in zip(inSplits, outs).enumerated() {
            inputs.append(param("\(name).block\(k + 1).weight", [o, i + shared], .weight(fanIn: i + shared, fanOut: o)))
            inputs.append(param("\(name).block\(k + 1).bias", [o], .bias(fanIn: i + shared)))
        }
        return add(
            name, .splitLinear, inputs, ["in_splits": Self.ints(inSplits), "shared": .uint(UInt64(shared))],
            shape: [shape(x)[0], outs.reduce(0, +)])
    }

    /// γ · x_g / ‖x_g‖ per group of consecutive features (one γ per group, or per feature).
    public mutating func l2normScale(_ name: String, _ x: String, groups: [Int], gamma: [Float], epsilon: Double = 1e-6) -> String {
        let g = param("\(name).gamma", [gamma.count], .constant(gamma))
        return add(name, .l2normScale, [x, g], ["groups": Self.ints(groups), "epsilon": .float(epsilon)], shape: shape(x))
    }

    /// A linear layer with fixed weights [out, in] and no bias (e.g. a permutation), not trained.
    public mutating func fixedLinear(_ name: String, _ x: String, weight: [Float], out: Int) -> String {
        let w = param("\(name).weight", [out, shape(x)[1]], .constant(weight))
        fixedWeights.insert(w)
        return add(name, .linear, [x, w], shape: [shape(x)[0], out])
    }

    /// Nodes named as in an existing graph: the builder's input stands for `value`.
    public func nodes(attachingInputTo value: String) -> [Graph.Node] {
        nodes.map { n in
            var n = n
            n.inputs = n.inputs.map { $0 == inputName ? value : $0 }
            return n
        }
    }
}
