import KDBundle
import KDTensor

/// Affine u8 quantization of one activation tensor: x̂ = scale · (clamp(round(x / scale) + zp, 0, 255) − zp),
/// rounding half to even as ONNX QuantizeLinear does.
public struct ActivationQuant: Equatable, Sendable {
    public var scale: Float
    public var zeroPoint: Int

    public init(scale: Float, zeroPoint: Int) {
        self.scale = scale
        self.zeroPoint = zeroPoint
    }

    /// The u8 grid that covers [lo, hi] and represents 0 exactly.
    public init(min lo: Float, max hi: Float) {
        let lo = Swift.min(lo, 0)
        let hi = Swift.max(hi, 0)
        let range = hi - lo
        scale = range > 0 ? range / 255 : 1
        zeroPoint = Int(Swift.min(255, Swift.max(0, (-lo / scale).rounded(.toNearestOrEven))))
    }

    public func quantize(_ x: Float) -> UInt8 {
        let q = (x / scale).rounded(.toNearestOrEven) + Float(zeroPoint)
        return UInt8(Swift.min(255, Swift.max(0, q)))
    }

    /// `t` rounded to the grid (a new tensor; `t` is left as it was).
    public func applied(to t: Tensor) -> Tensor {
        let out = Tensor(uninitialized: t.shape)
        let s = scale
        let zp = Float(zeroPoint)
        let src = t.storage.pointer
        let dst = out.storage.pointer
        for i in 0..<t.count {
            let q = Swift.min(255, Swift.max(0, (src[i] / s).rounded(.toNearestOrEven) + zp))
            dst[i] = s * (q - zp)
        }
        return out
    }

    /// Rounds `t` to the grid in place (for tensors nothing else shares).
    public func applyInPlace(_ t: Tensor) {
        let s = scale
        let zp = Float(zeroPoint)
        let p = t.storage.pointer
        for i in 0..<t.count {
            let q = Swift.min(255, Swift.max(0, (p[i] / s).rounded(.toNearestOrEven) + zp))
            p[i] = s * (q - zp)
        }
    }

    public static let metadataKey = "kdtool.activation_quant"

    static func encode(_ m: [String: ActivationQuant]) -> Value {
        .map(m.mapValues { .map(["scale": .float(Double($0.scale)), "zero_point": .int(Int64($0.zeroPoint))]) })
    }

    static func decode(_ v: Value, path: String) throws -> [String: ActivationQuant] {
        // A bundle fault like any other (Spec §7.10): invalid-field, exit 2.
        func bad(_ why: String) -> BundleError { BundleError(.invalidField, path: path, "META \(metadataKey): \(why)") }
        guard case .map(let entries) = v else { throw bad("is not a map") }
        var out: [String: ActivationQuant] = [:]
        for (name, e) in entries {
            guard case .map(let f) = e, case .float(let s)? = f["scale"], s > 0, s.isFinite else {
                throw bad("'\(name)' has no finite scale > 0")
            }
            let zp: Int64
            switch f["zero_point"] {
            case .int(let z)?: zp = z
            case .uint(let z)?: zp = Int64(clamping: z)
            default: throw bad("'\(name)' has no zero_point")
            }
            guard (0...255).contains(zp) else { throw bad("'\(name)' zero point \(zp) is outside 0…255") }
            out[name] = ActivationQuant(scale: Float(s), zeroPoint: Int(zp))
        }
        return out
    }
}
