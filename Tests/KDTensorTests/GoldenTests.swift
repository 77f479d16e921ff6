import Foundation
import Testing

@testable import KDTensor

/// One case of Golden/ops.json (tools/gen_golden.py).
struct GoldenCase: CustomStringConvertible, Sendable {
    let name: String
    let op: String
    let attrs: [String: AnySendable]
    let inputs: [(String, Tensor)]
    let output: Tensor
    let dy: Tensor
    let grads: [String: Tensor]
    var description: String { name }

    static let all: [GoldenCase] = {
        let url = Bundle.module.url(forResource: "ops", withExtension: "json", subdirectory: "Golden")!
        let doc = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (doc["cases"] as! [[String: Any]]).map { c in
            func tensor(_ v: Any) -> Tensor {
                let d = v as! [String: Any]
                let shape = d["shape"] as! [Int]
                return Tensor(shape: shape, values: (d["values"] as! [Double]).map { Float($0) })
            }
            let inputs = (c["inputs"] as! [String: Any])
            // Inputs in the order the op takes them (the generator's insertion order is lost in JSON objects).
            let order = ["x", "z", "a", "w", "g", "gamma", "b", "w0", "b0", "w1", "b1"]
            let names = inputs.keys.sorted { (order.firstIndex(of: $0) ?? 99) < (order.firstIndex(of: $1) ?? 99) }
            return GoldenCase(
                name: c["name"] as! String, op: c["op"] as! String,
                attrs: (c["attrs"] as! [String: Any]).mapValues { AnySendable($0) },
                inputs: names.map { ($0, tensor(inputs[$0]!)) }, output: tensor(c["output"]!), dy: tensor(c["dy"]!),
                grads: (c["grads"] as! [String: Any]).mapValues(tensor))
        }
    }()

    func ints(_ k: String) -> [Int] { attrs[k]!.value as! [Int] }
    func int(_ k: String) -> Int { attrs[k]!.value as! Int }
    func bool(_ k: String) -> Bool { attrs[k]!.value as! Bool }
    func float(_ k: String) -> Float { Float(attrs[k]!.value as! Double) }

    /// Runs the op on `tape` over leaves for `values` (same order as `inputs`). Losses return their
    /// scalar and gradient instead of a tape value.
    func run(_ tape: Tape, _ values: [Tensor]) throws -> Var {
        let v = values.map { tape.leaf($0, requiresGrad: true) }
        func hasBias() -> Var? { v.count > 2 ? v[2] : nil }
        switch op {
        case "conv2d":
            let w = values[1].shape
            let g = Window(kernel: [w[2], w[3]], stride: ints("stride"), pads: ints("pads"), dilation: ints("dilation"))
            return try tape.conv2d(v[0], v[1], hasBias(), g, groups: int("groups"))
        case "linear": return try tape.linear(v[0], v[1], v[2])
        case "maxpool":
            return try tape.maxpool(
                v[0],
                Window(
                    kernel: ints("kernel"), stride: ints("stride"), pads: ints("pads"), dilation: ints("dilation"),
                    ceilMode: bool("ceil_mode")))
        case "avgpool":
            return try tape.avgpool(
                v[0], Window(kernel: ints("kernel"), stride: ints("stride"), pads: ints("pads"), ceilMode: bool("ceil_mode")),
                countIncludePad: bool("count_include_pad"))
        case "globalavgpool": return try tape.globalAvgPool(v[0])
        case "batchnorm":
            let c = values[1].count
            return try tape.batchnorm(
                v[0], scale: v[1], bias: v[2], runningMean: Tensor(zeros: [c]), runningVar: Tensor(shape: [c], repeating: 1),
                epsilon: float("epsilon"), momentum: 0.1, training: true)
        case "relu": return tape.relu(v[0])
        case "sigmoid": return tape.sigmoid(v[0])
        case "softmax": return tape.softmax(v[0])
        case "add": return try tape.add(v[0], v[1])
        case "concat": return try tape.concat([v[0], v[1]], axis: int("axis"))
        case "split_linear":
            return try tape.splitLinear(v[0], blocks: [(v[1], v[2]), (v[3], v[4])], inSplits: ints("in_splits"), shared: int("shared"))
        case "l2norm_scale": return try tape.l2normScale(v[0], gamma: v[1], groups: ints("groups"), epsilon: float("epsilon"))
        case "flatten": return try tape.reshape(v[0], [values[0].shape[0], values[0].count / values[0].shape[0]])
        case "reshape": return try tape.reshape(v[0], ints("shape"))
        case "dropout":
            var rng = RandomSource(seed: 0)
            return tape.dropout(v[0], ratio: float("ratio"), training: false, rng: &rng)
        case "mul": return try tape.broadcast(.mul, v[0], v[1])
        case "sub": return try tape.broadcast(.sub, v[0], v[1])
        case "div": return try tape.broadcast(.div, v[0], v[1])
        case "reduce_mean":
            let r = values[0].rank
            return tape.reduceMean(v[0], axes: ints("axes").map { $0 < 0 ? $0 + r : $0 }, keepdims: bool("keepdims"))
        case "transpose": return tape.transpose(v[0], perm: ints("perm"))
        case "pad": return tape.pad(v[0], pads: ints("pads"), value: float("value"))
        case "slice":
            var ranges = values[0].shape.map { 0..<$0 }
            for (k, a) in ints("axes").enumerated() {
                ranges[a] = Shaping.sliceRange(start: ints("starts")[k], end: ints("ends")[k], size: values[0].shape[a])
            }
            return tape.slice(v[0], ranges: ranges)
        case "layernorm":
            let r = values[0].rank
            let axis = int("axis") < 0 ? int("axis") + r : int("axis")
            return try tape.layerNorm(v[0], scale: v[1], bias: v[2], axis: axis, epsilon: float("epsilon"))
        default:
            guard let kind = Activation.Kind(rawValue: op),
                let f = Activation(
                    kind: kind, floats: attrs.compactMapValues { $0.value as? Double }.filter { !($0.value.isNaN) },
                    bools: attrs.compactMapValues { $0.value as? Bool })
            else { fatalError("not a tape op: \(op)") }
            return tape.activation(v[0], f)
        }
    }

    var isLoss: Bool { op == "cross_entropy" || op == "soft_cross_entropy" }

    /// Loss value and gradient for the loss cases.
    func loss(_ z: Tensor) -> (Float, Tensor) {
        if op == "cross_entropy" { return Softmax.crossEntropy(logits: z, labels: ints("labels")) }
        let q = Tensor(shape: z.shape, values: (attrs["targets"]!.value as! [Double]).map { Float($0) })
        return Softmax.softCrossEntropy(logits: z, targets: q, temperature: float("temperature"))
    }

    /// Our output and input gradients for L = Σ y·dy.
    func evaluate(_ values: [Tensor]) throws -> (Tensor, [Tensor]) {
        if isLoss {
            let (l, g) = loss(values[0])
            let scaled = Tensor(shape: g.shape, values: g.array.map { $0 * dy[0] })
            return (Tensor(shape: [], values: [l]), [scaled])
        }
        let tape = Tape()
        let y = try run(tape, values)
        try tape.backward([(y, dy)])
        return (tape.value(y), (0..<values.count).map { tape.grad(Var(id: $0)) ?? Tensor(zeros: values[$0].shape) })
    }
}

struct AnySendable: @unchecked Sendable {
    let value: Any
    init(_ v: Any) { value = v }
}

/// Float32 results against float64 references: 1e-4 relative (plus 1e-5 absolute) is about ten
/// float32 roundings of the magnitudes involved.
let goldenTolerance: Float = 1e-4

func close(_ a: Tensor, _ b: Tensor, tol: Float) -> (Bool, String) {
    guard a.count == b.count else { return (false, "sizes \(a.shape) vs \(b.shape)") }
    let scale = max(1, b.array.map(abs).max() ?? 1)
    for i in 0..<a.count where abs(a[i] - b[i]) > tol * scale + 1e-5 {
        return (false, "element \(i): \(a[i]) vs \(b[i]) (scale \(scale))")
    }
    return (true, "")
}

@Suite("Ops against numpy golden values (tools/gen_golden.py)")
struct GoldenTests {
    @Test("forward and gradients match", arguments: GoldenCase.all)
    func golden(c: GoldenCase) throws {
        let (y, grads) = try c.evaluate(c.inputs.map { $0.1 })
        let (ok, why) = close(y, c.output, tol: goldenTolerance)
        #expect(ok, "\(c.name) output: \(why)")
        for (i, (name, _)) in c.inputs.enumerated() {
            guard let want = c.grads[name] else { continue }
            let (ok, why) = close(grads[i], want, tol: goldenTolerance * 10)
            #expect(ok, "\(c.name) d\(name): \(why)")
        }
    }
}

@Suite("Ops against their own finite differences")
struct FiniteDifferenceTests {
    /// Central differences of L = Σ y·dy in float32 with step 1e-2: truncation ~1e-4 and rounding
    /// ~1e-4 relative, so 2e-2 relative separates a wrong rule from noise. Max pooling is piecewise
    /// linear with a kink wherever two window entries tie, so it takes a step below the smallest gap.
    static func step(_ c: GoldenCase) -> Float { c.op == "maxpool" ? 1e-3 : 1e-2 }
    static let tolerance: Float = 2e-2

    @Test("backward rules agree with finite differences", arguments: GoldenCase.all)
    func finiteDifferences(c: GoldenCase) throws {
        let base = c.inputs.map { $0.1.copy() }
        let (_, analytic) = try c.evaluate(base)
        func objective(_ values: [Tensor]) throws -> Double {
            let (y, _) = try c.evaluate(values)
            if c.isLoss { return Double(y[0]) * Double(c.dy[0]) }
            return (0..<y.count).reduce(0.0) { $0 + Double(y[$1]) * Double(c.dy[$1]) }
        }
        for (i, (name, _)) in c.inputs.enumerated() where c.grads[name] != nil {
            let numeric = Tensor(zeros: base[i].shape)
            for j in 0..<base[i].count {
                var plus = base.map { $0.copy() }
                plus[i][j] += Self.step(c)
                var minus = base.map { $0.copy() }
                minus[i][j] -= Self.step(c)
                numeric[j] = Float((try objective(plus) - objective(minus)) / Double(2 * Self.step(c)))
                _ = (plus, minus)
            }
            let (ok, why) = close(analytic[i], numeric, tol: Self.tolerance)
            #expect(ok, "\(c.name) d\(name): \(why)")
        }
    }
}
