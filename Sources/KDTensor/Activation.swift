import Foundation

/// The elementwise activations of op set 2, each defined here and nowhere else: its op name in
/// the bundle, its attributes with their ranges, its forward and its derivative, whether it can
/// run as a convolution's epilogue, and its ONNX form in both directions. The graph's op set,
/// shape rule (the output has the input's shape), tape, inference plan, importer, exporter and
/// the op-completeness test all read this table, so adding an activation is one case here, its
/// Spec line, its golden entry and its test.
///
///     let hs = Activation.hardswish
///     hs.forward(x.pointer, y.pointer, count: x.count)
/// An activation on 16 lanes, as a type, so kernels specialise for it (`Activation.accept`).
public protocol VectorFunction {
    func callAsFunction(_ v: VectorMath.V) -> VectorMath.V
}

/// What a kernel generic over its epilogue implements: `visit` runs it with the concrete function.
public protocol ActivationVisitor {
    associatedtype Result
    func visit<F: VectorFunction>(_ f: F) -> Result
}

public enum Activation: Hashable, Sendable {
    /// min(max(x, min), max); ReLU6 is clip(0, 6).
    case clip(min: Float, max: Float)
    /// max(0, min(1, alpha·x + beta)).
    case hardsigmoid(alpha: Float, beta: Float)
    /// x · max(0, min(6, x + 3)) / 6 (PyTorch's and ONNX's HardSwish).
    case hardswish
    /// x · σ(x) (Swish with β = 1).
    case silu
    /// x · Φ(x) with the exact normal CDF, or its tanh approximation.
    case gelu(tanh: Bool)
    case erf
    case tanh
    /// x where x ≥ 0, alpha·x elsewhere.
    case leakyRelu(alpha: Float)
    /// √x (NaN below 0, as in ONNX).
    case sqrt

    /// The op names, as they appear in a bundle's graph.
    public enum Kind: String, CaseIterable, Sendable {
        case clip, hardsigmoid, hardswish, silu, gelu, erf, tanh
        case leakyRelu = "leaky_relu"
        case sqrt
    }

    /// An attribute: a float within a range, or a bool. Every listed attribute is required.
    public struct Attribute: Sendable {
        public var name: String
        /// Nil for a bool attribute.
        public var range: ClosedRange<Double>?
    }

    static let finite = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude

    public static func attributes(of kind: Kind) -> [Attribute] {
        switch kind {
        case .clip: [Attribute(name: "min", range: finite), Attribute(name: "max", range: finite)]
        case .hardsigmoid: [Attribute(name: "alpha", range: finite), Attribute(name: "beta", range: finite)]
        case .gelu: [Attribute(name: "tanh", range: nil)]
        case .leakyRelu: [Attribute(name: "alpha", range: finite)]
        case .hardswish, .silu, .erf, .tanh, .sqrt: []
        }
    }

    public var kind: Kind {
        switch self {
        case .clip: .clip
        case .hardsigmoid: .hardsigmoid
        case .hardswish: .hardswish
        case .silu: .silu
        case .gelu: .gelu
        case .erf: .erf
        case .tanh: .tanh
        case .leakyRelu: .leakyRelu
        case .sqrt: .sqrt
        }
    }

    /// The activation from its kind and attribute values (floats by name, bools by name); nil when
    /// one is missing or a clip's bounds are reversed.
    public init?(kind: Kind, floats: [String: Double], bools: [String: Bool]) {
        func f(_ k: String) -> Float? { floats[k].map { Float($0) } }
        switch kind {
        case .clip:
            guard let lo = f("min"), let hi = f("max"), lo <= hi else { return nil }
            self = .clip(min: lo, max: hi)
        case .hardsigmoid:
            guard let a = f("alpha"), let b = f("beta") else { return nil }
            self = .hardsigmoid(alpha: a, beta: b)
        case .gelu:
            guard let t = bools["tanh"] else { return nil }
            self = .gelu(tanh: t)
        case .leakyRelu:
            guard let a = f("alpha") else { return nil }
            self = .leakyRelu(alpha: a)
        case .hardswish: self = .hardswish
        case .silu: self = .silu
        case .erf: self = .erf
        case .tanh: self = .tanh
        case .sqrt: self = .sqrt
        }
    }

    /// The attribute values to write (floats, then bools).
    public var floatAttributes: [String: Float] {
        switch self {
        case .clip(let lo, let hi): ["min": lo, "max": hi]
        case .hardsigmoid(let a, let b): ["alpha": a, "beta": b]
        case .leakyRelu(let a): ["alpha": a]
        default: [:]
        }
    }
    public var boolAttributes: [String: Bool] {
        if case .gelu(let t) = self { return ["tanh": t] }
        return [:]
    }

    /// Whether f(0) = 0: such an activation can run on a channel-blocked convolution output in
    /// place, zero halo and padding lanes included (an epilogue); the others run as their own step.
    public var preservesZero: Bool {
        switch self {
        case .clip(let lo, let hi): lo <= 0 && hi >= 0
        case .hardsigmoid(_, let b): b == 0
        case .hardswish, .silu, .gelu, .erf, .tanh, .leakyRelu, .sqrt: true
        }
    }

    /// Whether the activation may run over a blocked value's zero halo and padding lanes in
    /// training: f(0) = 0, and a zero gradient there stays zero (f'(0) finite; not √x).
    public var runsOnHalo: Bool {
        guard preservesZero else { return false }
        var (x, y, dy, dx): (Float, Float, Float, Float) = (0, 0, 0, 1)
        forward(&x, &y, count: 1)
        backward(x: &x, y: &y, dy: &dy, dx: &dx, count: 1)
        return dx == 0
    }

    // MARK: forward and derivative

    @inline(__always) static func sigmoid(_ v: Float) -> Float { v >= 0 ? 1 / (1 + expf(-v)) : expf(v) / (1 + expf(v)) }
    static let sqrtHalf: Float = 0.70710678118654752
    static let invSqrt2Pi: Float = 0.39894228040143268
    static let sqrt2OverPi: Float = 0.79788456080286536

    /// f on 16 lanes (the form a kernel applies to its output registers, an epilogue).
    @inline(__always)
    public func apply(_ v: VectorMath.V) -> VectorMath.V {
        switch self {
        case .clip(let lo, let hi): Clip(lo: lo, hi: hi)(v)
        case .hardsigmoid(let a, let b): HardSigmoid(a: a, b: b)(v)
        case .hardswish: HardSwish()(v)
        case .silu: SiLU()(v)
        case .gelu(false): GELU()(v)
        case .gelu(true): GELUTanh()(v)
        case .erf: Erf()(v)
        case .tanh: Tanh()(v)
        case .leakyRelu(let a): LeakyReLU(a: a)(v)
        case .sqrt: Sqrt()(v)
        }
    }

    /// Calls `visitor` with this activation as a concrete `VectorFunction`, so a kernel generic over
    /// its epilogue is specialised for each activation: the choice is made once per call, never per
    /// vector (one loop holding every activation's code would spill its registers).
    @inline(__always)
    public func accept<Visitor: ActivationVisitor>(_ visitor: Visitor) -> Visitor.Result {
        switch self {
        case .clip(let lo, let hi): visitor.visit(Clip(lo: lo, hi: hi))
        case .hardsigmoid(let a, let b): visitor.visit(HardSigmoid(a: a, b: b))
        case .hardswish: visitor.visit(HardSwish())
        case .silu: visitor.visit(SiLU())
        case .gelu(false): visitor.visit(GELU())
        case .gelu(true): visitor.visit(GELUTanh())
        case .erf: visitor.visit(Erf())
        case .tanh: visitor.visit(Tanh())
        case .leakyRelu(let a): visitor.visit(LeakyReLU(a: a))
        case .sqrt: visitor.visit(Sqrt())
        }
    }

    /// An optional activation (nil: identity) or ReLU, as `accept` does.
    @inline(__always)
    static func accept<Visitor: ActivationVisitor>(_ f: Activation?, relu: Bool, _ visitor: Visitor) -> Visitor.Result {
        if relu { return visitor.visit(ReLU()) }
        guard let f else { return visitor.visit(Identity()) }
        return f.accept(visitor)
    }

    public struct Identity: VectorFunction {
        @inline(__always) public func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { v }
    }
    public struct ReLU: VectorFunction {
        @inline(__always) public func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { v.replacing(with: 0, where: v .< 0) }
    }
    struct Clip: VectorFunction {
        let lo: Float, hi: Float
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { VectorMath.min(VectorMath.max(v, lo), hi) }
    }
    struct HardSigmoid: VectorFunction {
        let a: Float, b: Float
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { VectorMath.min(VectorMath.max(a * v + b, 0), 1) }
    }
    struct HardSwish: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V {
            v * VectorMath.min(VectorMath.max(v + 3, 0), 6) * (1 / 6)
        }
    }
    struct SiLU: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { v * VectorMath.sigmoid(v) }
    }
    struct GELU: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { 0.5 * v * (1 + VectorMath.erf(v * Activation.sqrtHalf)) }
    }
    struct GELUTanh: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V {
            0.5 * v * (1 + VectorMath.tanh(Activation.sqrt2OverPi * (v + 0.044715 * v * v * v)))
        }
    }
    struct Erf: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { VectorMath.erf(v) }
    }
    struct Tanh: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { VectorMath.tanh(v) }
    }
    struct LeakyReLU: VectorFunction {
        let a: Float
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { v.replacing(with: a * v, where: v .< 0) }
    }

    struct Sqrt: VectorFunction {
        @inline(__always) func callAsFunction(_ v: VectorMath.V) -> VectorMath.V { v.squareRoot() }
    }

    struct MapVisitor: ActivationVisitor {
        let x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int
        @inline(__always) func visit<F: VectorFunction>(_ f: F) { VectorMath.map(x, y, count: count) { f($0) } }
    }

    /// y = f(x) over `count` values (y may be x), 16 at a time.
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        accept(MapVisitor(x: x, y: y, count: count))
    }

    /// dx = dy · f′(x) over `count` values, from the input x (and the output y where that is cheaper).
    public func backward(
        x: UnsafePointer<Float>, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int
    ) {
        switch self {
        case .clip(let lo, let hi): for i in 0..<count { dx[i] = x[i] > lo && x[i] < hi ? dy[i] : 0 }
        case .hardsigmoid(let a, let b):
            for i in 0..<count {
                let u = a * x[i] + b
                dx[i] = u > 0 && u < 1 ? dy[i] * a : 0
            }
        case .hardswish:
            for i in 0..<count {
                let v = x[i]
                dx[i] = v < -3 ? 0 : v > 3 ? dy[i] : dy[i] * (2 * v + 3) * (1 / 6)
            }
        case .silu:
            for i in 0..<count {
                let s = Activation.sigmoid(x[i])
                dx[i] = dy[i] * s * (1 + x[i] * (1 - s))
            }
        case .gelu(false):
            for i in 0..<count {
                let v = x[i]
                dx[i] = dy[i] * (0.5 * (1 + erff(v * Activation.sqrtHalf)) + v * Activation.invSqrt2Pi * expf(-0.5 * v * v))
            }
        case .gelu(true):
            for i in 0..<count {
                let v = x[i]
                let t = tanhf(Activation.sqrt2OverPi * (v + 0.044715 * v * v * v))
                dx[i] = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * Activation.sqrt2OverPi * (1 + 3 * 0.044715 * v * v))
            }
        case .erf: for i in 0..<count { dx[i] = dy[i] * 1.1283791670955126 * expf(-x[i] * x[i]) }
        case .tanh: for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
        case .leakyRelu(let a): for i in 0..<count { dx[i] = x[i] >= 0 ? dy[i] : a * dy[i] }
        case .sqrt: for i in 0..<count { dx[i] = dy[i] * 0.5 / y[i] }
        }
    }

    public func forward(_ x: Tensor) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        Parallel.chunks(x.count, parts: x.count > 1 << 15 ? Parallel.threads : 1) { _, r in
            forward(x.pointer + r.lowerBound, y.pointer + r.lowerBound, count: r.count)
        }
        return y
    }

    public func backward(dy: Tensor, x: Tensor, y: Tensor) -> Tensor {
        let dx = Tensor(uninitialized: x.shape)
        Parallel.chunks(x.count, parts: x.count > 1 << 15 ? Parallel.threads : 1) { _, r in
            let o = r.lowerBound
            backward(x: x.pointer + o, y: y.pointer + o, dy: dy.pointer + o, dx: dx.pointer + o, count: r.count)
        }
        return dx
    }

    // MARK: ONNX

    /// How the activation is written to ONNX: one op with float attributes, Clip (bounds as
    /// inputs), or a decomposition into primitive ops (SiLU: x·Sigmoid(x); GELU: through Erf or Tanh).
    public enum OnnxForm: Equatable, Sendable {
        case op(String, floats: [String: Float])
        case clip(min: Float, max: Float)
        case silu
        case gelu(tanh: Bool)
    }

    public var onnx: OnnxForm {
        switch self {
        case .clip(let lo, let hi): .clip(min: lo, max: hi)
        case .hardsigmoid(let a, let b): .op("HardSigmoid", floats: ["alpha": a, "beta": b])
        case .hardswish: .op("HardSwish", floats: [:])
        case .silu: .silu
        case .gelu(let t): .gelu(tanh: t)
        case .erf: .op("Erf", floats: [:])
        case .tanh: .op("Tanh", floats: [:])
        case .leakyRelu(let a): .op("LeakyRelu", floats: ["alpha": a])
        case .sqrt: .op("Sqrt", floats: [:])
        }
    }

    /// The ONNX op types that import as one activation (Clip, whose bounds are inputs, and the
    /// decomposed forms are recognised by the importer itself).
    public static func fromOnnx(_ opType: String, floats: [String: Float], strings: [String: String]) -> Activation? {
        switch opType {
        case "HardSigmoid": .hardsigmoid(alpha: floats["alpha"] ?? 0.2, beta: floats["beta"] ?? 0.5)
        case "HardSwish": .hardswish
        case "Erf": .erf
        case "Tanh": .tanh
        case "LeakyRelu": .leakyRelu(alpha: floats["alpha"] ?? 0.01)
        case "Gelu": .gelu(tanh: strings["approximate"] == "tanh")
        case "Sqrt": .sqrt
        default: nil
        }
    }

}
