import KDBundle
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// How `quantize-check` stores a model (METHODS.md, Quantize-check).
public enum QuantScheme: String, CaseIterable, Sendable {
    /// Symmetric int8 weights, one scale per tensor; u8 activations from calibration.
    case int8
    /// Symmetric int8 weights, one scale per output channel (axis 0); u8 activations from calibration.
    case int8PerChannel = "int8-per-channel"
    /// Every float tensor stored as IEEE binary16; activations stay fp32.
    case fp16

    public var quantizesActivations: Bool { self != .fp16 }
}

/// Symmetric int8 weight quantization: q = clamp(round(w / s), −127, 127), s = max|w| / 127.
public enum WeightQuantizer {
    public static func int8(_ w: [Float], shape: [Int], perChannel: Bool) -> (q: [Int8], params: Quantization.Params) {
        let channels = perChannel && shape.count >= 2 ? shape[0] : 1
        let inner = w.count / max(channels, 1)
        var scales = [Float](repeating: 1, count: channels)
        var q = [Int8](repeating: 0, count: w.count)
        for c in 0..<channels {
            var m: Float = 0
            for i in c * inner..<(c + 1) * inner { m = max(m, abs(w[i])) }
            let s = m > 0 ? m / 127 : 1
            scales[c] = s
            for i in c * inner..<(c + 1) * inner { q[i] = Int8(max(-127, min(127, (w[i] / s).rounded(.toNearestOrEven)))) }
        }
        let params = Quantization.Params(
            axis: perChannel && shape.count >= 2 ? 0 : -1, scale: scales,
            zeroPoint: [Int64](repeating: 0, count: channels))
        return (q, params)
    }

    /// Real values of int8 codes under `params` (per tensor or along axis 0).
    public static func dequantize(_ q: [Int8], params: Quantization.Params) -> [Float] {
        let channels = params.scale.count
        let inner = q.count / max(channels, 1)
        return q.indices.map { i in
            let c = params.axis < 0 ? 0 : i / max(inner, 1)
            return params.scale[c] * (Float(q[i]) - Float(params.zeroPoint[c]))
        }
    }

    /// fp16 round trip of each value (what a binary16 tensor stores).
    public static func fp16(_ w: [Float]) -> [Float] {
        w.map { TensorConversion.halfToFloat(TensorConversion.floatToHalf($0)) }
    }
}

/// Signal-to-quantization-noise ratio in dB: 10·log10(Σx² / Σ(x − x̂)²); +∞ when x̂ = x.
public func sqnr(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) -> Double {
    var signal = 0.0
    var noise = 0.0
    for i in 0..<min(x.count, y.count) {
        let a = Double(x[i])
        let d = a - Double(y[i])
        signal += a * a
        noise += d * d
    }
    return sqnrDB(signal: signal, noise: noise)
}

public func sqnr(_ x: [Float], _ y: [Float]) -> Double {
    x.withUnsafeBufferPointer { a in y.withUnsafeBufferPointer { b in sqnr(a, b) } }
}

func sqnrDB(signal: Double, noise: Double) -> Double {
    if noise == 0 { return .infinity }
    if signal == 0 { return -.infinity }
    return 10 * log10(signal / noise)
}

extension Model {
    /// The graph values whose consumers multiply them by weights (inputs of conv2d, linear and
    /// split_linear nodes): the activations that int8 schemes quantize.
    public var quantizableActivations: [String] {
        var seen = Set<String>()
        return order.filter { [.conv2d, .linear, .splitLinear].contains($0.op) }.compactMap { n in
            seen.insert(n.inputs[0]).inserted ? n.inputs[0] : nil
        }
    }

    /// Weight tensors of conv2d, linear and split_linear nodes, with the node that uses each.
    public var quantizableWeights: [(node: String, tensor: String)] {
        order.flatMap { n -> [(node: String, tensor: String)] in
            switch n.op {
            case .conv2d, .linear: return [(n.name, n.inputs[1])]
            case .splitLinear: return stride(from: 1, to: n.inputs.count, by: 2).map { (n.name, n.inputs[$0]) }
            default: return []
            }
        }.filter { parameters[$0.tensor] != nil }
    }
}

/// Activation ranges observed on calibration batches: min/max, or a percentile of a
/// deterministic subsample (at most `samplesPerBatch` values per tensor and batch).
public struct Calibrator {
    public let names: [String]
    var lo: [String: Float] = [:]
    var hi: [String: Float] = [:]
    var samples: [String: [Float]] = [:]
    let keepSamples: Bool
    let samplesPerBatch = 65_536
    public private(set) var images = 0

    public init(names: [String], percentile: Bool) {
        self.names = names
        self.keepSamples = percentile
    }

    public mutating func observe(_ model: Model, batch: Tensor) throws {
        var rng = RandomSource(seed: 0)
        let tape = Tape(recording: false)
        let f = try model.forward(batch, training: false, tape: tape, rng: &rng)
        for name in names {
            guard let v = f.values[name] else { continue }
            let t = tape.value(v)
            let p = t.storage.pointer
            var l = lo[name] ?? .infinity
            var h = hi[name] ?? -.infinity
            for i in 0..<t.count {
                l = min(l, p[i])
                h = max(h, p[i])
            }
            lo[name] = l
            hi[name] = h
            if keepSamples {
                let step = max(1, t.count / samplesPerBatch)
                samples[name, default: []].append(contentsOf: stride(from: 0, to: t.count, by: step).map { p[$0] })
            }
        }
        images += batch.shape[0]
    }

    /// One u8 grid per observed tensor; with `percentile` P the range is [q(1 − P/100), q(P/100)].
    public func ranges(percentile: Double?) -> [String: ActivationQuant] {
        var out: [String: ActivationQuant] = [:]
        for name in names {
            guard var l = lo[name], var h = hi[name] else { continue }
            if let p = percentile, var s = samples[name], !s.isEmpty {
                s.sort()
                func q(_ f: Double) -> Float { s[min(s.count - 1, max(0, Int((f * Double(s.count - 1)).rounded())))] }
                l = q(1 - p / 100)
                h = q(p / 100)
            }
            out[name] = ActivationQuant(min: l, max: h)
        }
        return out
    }
}

/// A model stored under a scheme: the bundle contents to write and, per quantized weight,
/// its SQNR against fp32.
public struct QuantizedBundle {
    public var contents: BundleContents
    /// Weight SQNR (dB) by tensor name.
    public var weightSQNR: [String: Double]
    /// fp16: tensors left in f32 because a value lies outside binary16's range (±65504).
    public var keptFloat32: [String] = []

    public init(model: Model, scheme: QuantScheme, activations: [String: ActivationQuant]) throws {
        let m = try model.copy()
        m.activationQuant = scheme.quantizesActivations ? activations : [:]
        var c = m.contents()
        let weights = Set(model.quantizableWeights.map(\.tensor))
        var params: [Quantization.Params] = []
        var sq: [String: Double] = [:]
        for (i, t) in c.tensors.enumerated() where t.dtype == .f32 {
            let w = (model.parameters[t.name] ?? model.buffers[t.name])!
            let values = Array(UnsafeBufferPointer(start: w.storage.pointer, count: w.count))
            switch scheme {
            case .fp16:
                guard values.allSatisfy({ abs($0) <= 65504 }) else {
                    keptFloat32.append(t.name)
                    continue
                }
                var bytes = [UInt8](repeating: 0, count: values.count * 2)
                for (j, v) in values.enumerated() {
                    let h = TensorConversion.floatToHalf(v)
                    bytes[2 * j] = UInt8(h & 0xff)
                    bytes[2 * j + 1] = UInt8(h >> 8)
                }
                c.tensors[i] = .init(name: t.name, dtype: .f16, shape: t.shape, bytes: bytes)
                if weights.contains(t.name) { sq[t.name] = sqnr(values, WeightQuantizer.fp16(values)) }
            case .int8, .int8PerChannel:
                guard weights.contains(t.name) else { continue }
                let (q, p) = WeightQuantizer.int8(values, shape: t.shape, perChannel: scheme == .int8PerChannel)
                c.tensors[i] = .init(
                    name: t.name, dtype: .i8, shape: t.shape, bytes: q.map { UInt8(bitPattern: $0) }, quant: params.count)
                params.append(p)
                sq[t.name] = sqnr(values, WeightQuantizer.dequantize(q, params: p))
            }
        }
        if !params.isEmpty { c.quantization = Quantization(params) }
        contents = c
        weightSQNR = sq
    }
}
