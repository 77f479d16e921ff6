/// exp, erf, tanh and σ on 16 lanes at once (one AVX-512 register, two AVX2 ones), for the
/// activations' forward passes. exp is Cody–Waite range reduction and a degree-6 polynomial
/// (≤ 2 ulp on [−87, 88]); erf is Abramowitz–Stegun 7.1.26 (absolute error ≤ 1.5e−7); tanh and σ
/// follow from exp. Results differ from libm's in the last bits only.
public enum VectorMath {
    public typealias V = SIMD16<Float>

    @inline(__always)
    public static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    @inline(__always)
    public static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

    /// f over `count` values at `x` into `y` (which may be `x`), 16 at a time; the tail goes through
    /// a 16-float buffer, so no lane is ever indexed at run time (that keeps vectors in registers).
    @inline(__always)
    public static func map(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int, _ f: (V) -> V) {
        var i = 0
        while i + 16 <= count {
            store(f(load(x + i)), y + i)
            i += 16
        }
        guard i < count else { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { t in
            let b = t.baseAddress!
            b.update(repeating: 0, count: 16)
            b.update(from: x + i, count: count - i)
            store(f(load(b)), b)
            (y + i).update(from: b, count: count - i)
        }
    }

    /// Lane-wise max and min as compare-and-select on the concrete type (the generic `clamped` and
    /// `pointwiseMax` compile to loops over the lanes).
    @inline(__always)
    public static func max(_ a: V, _ b: Float) -> V {
        let v = V(repeating: b)
        return a.replacing(with: v, where: a .< v)
    }
    @inline(__always)
    public static func min(_ a: V, _ b: Float) -> V {
        let v = V(repeating: b)
        return a.replacing(with: v, where: a .> v)
    }

    @inline(__always)
    public static func exp(_ x: V) -> V {
        let c = min(max(x, -87.3), 88.7)
        // Round to nearest by the 1.5·2²³ trick: the sum's low mantissa bits hold n.
        let t = c * 1.44269504088896341 + 12582912
        let n = t - 12582912
        // r = c − n·ln 2, ln 2 split in two for accuracy.
        var r = c - n * 0.693359375
        r = r - n * -2.12194440e-4
        var p = V(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * r * r + r + 1
        let bits = (unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return p * unsafeBitCast(bits, to: V.self)
    }

    @inline(__always)
    public static func sigmoid(_ x: V) -> V { 1 / (1 + exp(-x)) }

    @inline(__always)
    public static func tanh(_ x: V) -> V {
        // 1 − 2/(e^{2x} + 1), odd-symmetric so small |x| keeps its sign.
        let a = x.replacing(with: -x, where: x .< 0)
        let t = 1 - 2 / (exp(2 * a) + 1)
        return t.replacing(with: -t, where: x .< 0)
    }

    @inline(__always)
    public static func erf(_ x: V) -> V {
        let a = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.3275911 * a)
        var p = V(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let y = 1 - p * t * exp(-a * a)
        return y.replacing(with: -y, where: x .< 0)
    }
}
