#if canImport(Glibc)
    import Glibc
#endif

/// Row tiles over NCHW input at stride 1 that slide along the kernel's columns: LeNet-5's conv2
/// (6 → 16, 5 × 5) and the first 3 × 3 convolution of resnet8 and resnet20.
///
/// Tap by tap, a tile of P pixels × one vector of output channels broadcasts P input values per
/// kernel column: one load per multiply-add, and an FMA with its broadcast operand in memory runs
/// at about 80 % of the rate of one with both in registers (measured on this Zen 5: 6.1 against
/// 7.5 G/s). But output pixel q at column kj reads the same input value as pixel q + 1 at column
/// kj − 1. Here a pass over one input channel and kernel row holds the kw weight vectors in
/// registers and broadcasts each of the row's P + kw − 1 input values once, into every pixel it
/// serves: for LeNet-5's conv2 (10 pixels, kw 5) 19 loads per 50 multiply-adds instead of 55.
/// The accumulators take the same products in the same order (kernel columns ascending within a
/// kernel row), so the bits are those of the tap-by-tap tile.
///
/// The tiles are one row, at most 11 pixels (kw 5) or 13 (kw 3), spelled out by
/// tools/gen_sliding.py (DirectConv+Sliding.generated.swift): a multi-row tile's 2–3 rows run one
/// after the other.
extension DirectConv {
    /// `--debug-no-sliding` keeps every tile tap by tap, for comparisons (KernelPolicy).
    public static var slidingColumns: Bool { KernelPolicy.slidingColumns }

    /// Whether a convolution's row tiles can slide: NCHW input, unit stride and dilation along
    /// the row, and a kernel width with sliding tiles (3 or 5).
    static func slides(inBlock: Int, kernelWidth: Int, window: Window) -> Bool {
        inBlock == 1 && window.stride.w == 1 && window.dilation.w == 1 && Tile<SIMD16<Float>>.slidingPixels(kernelWidth: kernelWidth) > 0
    }
}

extension DirectConv.Tile {
    /// `rows` × `p` pixels, interior and with every tap, as sliding tiles of at most
    /// `slidingPixels` pixels each (a row split evenly); false (nothing done) without 16-lane
    /// vectors or for fewer than 5 pixels, the narrowest tile generated (a multi-row tile is
    /// never narrower).
    @inline(__always)
    func dispatchSliding(
        _ rows: Int, _ p: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
        _ d: UnsafeMutablePointer<Float>
    ) -> Bool {
        guard V.scalarCount == 16, p >= 5 else { return false }
        let most = Self.slidingPixels(kernelWidth: kw)
        let parts = (p + most - 1) / most
        for r in 0..<rows {
            var q = 0
            for i in 0..<parts {
                let n = p / parts + (i < p % parts ? 1 : 0)
                slide(n, x + r * inRowStep + q, w, bias, d + r * outRowStep + q * outPixel)
                q += n
            }
        }
        return true
    }

    /// One finished accumulator: the residual added, ReLU applied, stored at `o`.
    @inline(__always)
    func finish(_ acc: V, _ o: UnsafeMutablePointer<Float>) {
        var v = acc
        if let residualOffset { v += V.load(o + residualOffset, blockStride: outBlock) }
        (relu ? (upper < .infinity ? v.relu(upTo: upper) : v.relu()) : v).store(o, blockStride: outBlock)
    }
}
