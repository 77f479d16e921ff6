/// Element conversions between stored dtypes and Float.
public enum TensorConversion {
    /// IEEE binary16 → binary32, exact for every value.
    @inlinable
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1f)
        let mant = UInt32(h & 0x3ff)
        if exp == 0 {
            // Zero or subnormal: value = mant · 2^-24.
            let v = Float(mant) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (mant << 13))
    }

    /// binary32 → binary16 with round-to-nearest-even (Swift's Float16 conversion semantics).
    @inlinable
    public static func floatToHalf(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exp = Int((bits >> 23) & 0xff)
        var mant = bits & 0x7f_ffff
        if exp == 255 { return sign | 0x7c00 | (mant != 0 ? 0x200 : 0) }
        var e = exp - 127 + 15
        if e >= 31 { return sign | 0x7c00 }
        if e <= 0 {
            if e < -10 { return sign }
            mant |= 0x80_0000
            let shift = UInt32(14 - e)
            var half = mant >> shift
            let rem = mant & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if rem > halfway || (rem == halfway && half & 1 == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = mant >> 13
        let rem = mant & 0x1fff
        if rem > 0x1000 || (rem == 0x1000 && half & 1 == 1) {
            half += 1
            if half == 0x400 {
                half = 0
                e += 1
                if e >= 31 { return sign | 0x7c00 }
            }
        }
        return sign | UInt16(e) << 10 | UInt16(half)
    }

    @inlinable
    public static func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// Round-to-nearest-even truncation of binary32 to bfloat16.
    @inlinable
    public static func floatToBF16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = UInt32(0x7fff) + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// Values as Float: float types widened, integer types dequantized when `params` is given.
    public static func floats(_ t: TensorInfo, _ data: UnsafeRawBufferPointer, params: Quantization.Params?) throws
        -> [Float]
    {
        let n = t.elementCount
        var out = [Float](repeating: 0, count: n)
        switch t.dtype {
        case .f32: for i in 0..<n { out[i] = Float(bitPattern: data.loadLE(UInt32.self, at: i * 4)) }
        case .f16: for i in 0..<n { out[i] = halfToFloat(data.loadLE(UInt16.self, at: i * 2)) }
        case .bf16: for i in 0..<n { out[i] = bf16ToFloat(data.loadLE(UInt16.self, at: i * 2)) }
        case .i8: for i in 0..<n { out[i] = Float(Int8(bitPattern: data[i])) }
        case .u8, .bool: for i in 0..<n { out[i] = Float(data[i]) }
        case .i32: for i in 0..<n { out[i] = Float(Int32(bitPattern: data.loadLE(UInt32.self, at: i * 4))) }
        case .i64: for i in 0..<n { out[i] = Float(Int64(bitPattern: data.loadLE(UInt64.self, at: i * 8))) }
        }
        if let p = params {
            // Per-channel: the channel of flat index i along `axis` is (i / inner) % dim.
            let inner = p.axis < 0 ? n : t.shape[(p.axis + 1)...].reduce(1, *)
            let dim = p.axis < 0 ? 1 : t.shape[p.axis]
            for i in 0..<n {
                let c = p.axis < 0 ? 0 : (i / max(inner, 1)) % max(dim, 1)
                out[i] = p.scale[c] * (out[i] - Float(p.zeroPoint[c]))
            }
        }
        return out
    }

    /// Non-finite floats and non-0/1 bools are invalid tensor contents (Spec §4.1).
    static func checkValues(_ t: TensorInfo, _ data: UnsafeRawBufferPointer, offset: Int) throws {
        let n = t.elementCount
        func bad(_ i: Int, _ v: Float) -> BundleError {
            BundleError(.nonFinite, offset: offset, "tensor '\(t.name)' element \(i) is \(v)")
        }
        switch t.dtype {
        case .f32:
            for i in 0..<n where data.loadLE(UInt32.self, at: i * 4) & 0x7f80_0000 == 0x7f80_0000 {
                throw bad(i, Float(bitPattern: data.loadLE(UInt32.self, at: i * 4)))
            }
        case .f16:
            for i in 0..<n where data.loadLE(UInt16.self, at: i * 2) & 0x7c00 == 0x7c00 {
                throw bad(i, halfToFloat(data.loadLE(UInt16.self, at: i * 2)))
            }
        case .bf16:
            for i in 0..<n where data.loadLE(UInt16.self, at: i * 2) & 0x7f80 == 0x7f80 {
                throw bad(i, bf16ToFloat(data.loadLE(UInt16.self, at: i * 2)))
            }
        case .bool:
            if let i = (0..<n).first(where: { data[$0] > 1 }) {
                throw BundleError(.invalidField, offset: offset, "tensor '\(t.name)' bool element \(i) is \(data[i])")
            }
        default:
            break
        }
    }
}
