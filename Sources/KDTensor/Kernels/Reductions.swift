/// Vectorised reductions: Swift does not reorder floating-point sums on its own, so the
/// independent partial sums are spelled out as SIMD lanes.
@usableFromInline
enum Reduce {
    @inlinable
    static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n {
            s += p[i]
            i += 1
        }
        return s
    }

    /// Σ (p[i] − mean)²
    @inlinable
    static func squaredDeviation(_ p: UnsafePointer<Float>, _ n: Int, mean: Float) -> Float {
        var acc = SIMD8<Float>()
        let m = SIMD8<Float>(repeating: mean)
        var i = 0
        while i + 8 <= n {
            let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) - m
            acc += d * d
            i += 8
        }
        var s = acc.sum()
        while i < n {
            let d = p[i] - mean
            s += d * d
            i += 1
        }
        return s
    }

    /// Σ a[i]·b[i]
    @inlinable
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc +=
                UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }
}
