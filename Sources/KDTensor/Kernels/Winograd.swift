#if canImport(Glibc)
    import Glibc
#endif

/// A 3×3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
/// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), for inference.
///
/// Each 2×2 block of output pixels ("tile") comes from a 4×4 block of input: the input block is
/// transformed (V = Bᵀ d B), multiplied element by element with the transformed filter
/// (U = G g Gᵀ, made once) and summed over the input channels, then transformed back
/// (Y = Aᵀ M A). The sum over channels is 16 independent matrix products, M[ξ] = V[ξ] · U[ξ]
/// (tiles × C times C × O), with 16 multiplications per tile and channel pair where the direct
/// kernel has 36: 2.25 times fewer. The transforms are additions on the channel-blocked layout,
/// eight channels of a pixel at a time.
///
/// The result differs from the direct convolution by rounding only (the transforms add and
/// subtract, and G halves): within a few units in the last place of the largest partial sums.
/// A tile's result depends on nothing but its own input, so it is the same for any thread count.
public struct WinogradConv: @unchecked Sendable {
    public let inChannels: Int
    public let outChannels: Int
    /// Output channels per vector of the matrix products (16 with AVX-512, else 8).
    let lanes: Int
    /// Input channels rounded up to a block of eight, output channels to a vector.
    let cPad: Int
    let oPad: Int
    /// U[ξ][c][o]: the transformed filter, for each of the 16 positions ξ of a tile.
    let u: Tensor
    let bias: Tensor

    /// Whether a convolution with this geometry can run here: 3×3, stride 1, dilation 1, padding 1
    /// on every side, dense.
    public static func applies(kernel: [Int], window: Window, groups: Int) -> Bool {
        kernel == [3, 3] && window.stride == (1, 1) && window.dilation == (1, 1) && window.pads == [1, 1, 1, 1] && groups == 1
    }

    public init(weight: Tensor, bias: Tensor?) {
        let (o, c) = (weight.shape[0], weight.shape[1])
        precondition(weight.shape[2] == 3 && weight.shape[3] == 3, "Winograd F(2×2, 3×3) needs 3×3 filters")
        inChannels = c
        outChannels = o
        lanes = VectorUnits.wide ? 16 : 8
        cPad = (c + 7) / 8 * 8
        oPad = (o + lanes - 1) / lanes * lanes
        u = Tensor(zeros: [16 * cPad * oPad])
        let wp = weight.pointer
        for oc in 0..<o {
            for ic in 0..<c {
                let g = wp + (oc * c + ic) * 9
                // G g (4 × 3), then (G g) Gᵀ (4 × 4), with G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
                var gg = [Float](repeating: 0, count: 12)
                for j in 0..<3 {
                    let (a, b, e) = (g[j], g[3 + j], g[6 + j])
                    gg[j] = a
                    gg[3 + j] = (a + b + e) * 0.5
                    gg[6 + j] = (a - b + e) * 0.5
                    gg[9 + j] = e
                }
                for i in 0..<4 {
                    let (a, b, e) = (gg[i * 3], gg[i * 3 + 1], gg[i * 3 + 2])
                    let row = [a, (a + b + e) * 0.5, (a - b + e) * 0.5, e]
                    for j in 0..<4 { u[((i * 4 + j) * cPad + ic) * oPad + oc] = row[j] }
                }
            }
        }
        self.bias = Tensor(zeros: [oPad])
        if let bias { for oc in 0..<o { self.bias[oc] = bias[oc] } }
    }

    /// The zero halo an input of `h` × `w` pixels needs: the padding, and where a size is odd one
    /// more pixel, which the last tiles read (their outputs past the edge are not stored).
    public static func halo(h: Int, w: Int) -> Int { h % 2 == 0 && w % 2 == 0 ? 1 : 2 }

    /// Whether `run` takes this input: the channels it was made for and the halo `halo(h:w:)` asks.
    public func accepts(_ x: BlockedTensor) -> Bool {
        x.channels == inChannels && x.h > 0 && x.w > 0 && x.pad >= Self.halo(h: x.h, w: x.w)
    }

    /// The convolution of `x` (see `accepts`), `residual` added before the ReLU, output with a
    /// zero halo of `outPad`.
    public func callAsFunction(_ x: BlockedTensor, relu: Bool = false, residual: BlockedTensor? = nil, outPad: Int = 0) throws
        -> BlockedTensor
    {
        guard accepts(x) else {
            throw TensorError(
                "Winograd convolution needs \(inChannels) channels and a halo of \(Self.halo(h: x.h, w: x.w)); got \(x.shape) with halo \(x.pad)"
            )
        }
        let (n, h, w) = (x.n, x.h, x.w)
        let y = BlockedTensor(uninitialized: n, channels: outChannels, h: h, w: w, pad: outPad)
        if let r = residual, r.shape != y.shape {
            throw TensorError("residual \(r.shape) does not match the convolution's output \(y.shape)")
        }
        // The residual in the output's layout (a copy where its halo differs), kept alive while read.
        let aligned = residual?.withPad(outPad)
        withExtendedLifetime(aligned) {
            let residualOffset = aligned.map { $0.origin - y.origin }
            #if KDTOOL_AVX512
                if lanes == 16 {
                    run(SIMD16<Float>.self, x, y: y, residualOffset: residualOffset, relu: relu)
                    return
                }
            #endif
            run(SIMD8<Float>.self, x, y: y, residualOffset: residualOffset, relu: relu)
        }
        return y
    }

    /// Tiles per unit, at most (fewer where an image has fewer); `KDTOOL_WINOGRAD_TILES` sets it,
    /// for measurements (28 and 32 measured the same as 16).
    static let unitTiles: Int = {
        if let s = getenv("KDTOOL_WINOGRAD_TILES"), let v = Int(String(cString: s)), v > 0 { return v }
        return 16
    }()

    func run<V: OutputLanes>(_: V.Type, _ x: BlockedTensor, y: BlockedTensor, residualOffset: Int?, relu: Bool) {
        let (th, tw) = ((x.h + 1) / 2, (x.w + 1) / 2)
        // Whether the last tile row (column) has a second output row (column) to store.
        let (fullRows, fullColumns) = (x.h % 2 == 0, x.w % 2 == 0)
        // A unit is a few tile rows of one image, about 16 tiles: enough tiles for each vector of
        // U loaded to be used several times, few enough that V and M stay in the cache.
        let rowsPerUnit = max(1, min(th, Self.unitTiles / tw))
        let unitsPerImage = (th + rowsPerUnit - 1) / rowsPerUnit
        let maxTiles = rowsPerUnit * tw
        let (cPad, oPad, lanes) = (cPad, oPad, V.scalarCount)
        let oVectors = oPad / lanes
        // Output vectors per product tile, and tiles per product tile: as many accumulators as the
        // direct kernel keeps (24 in 32 registers, 12 in 16).
        let nb = oVectors % 2 == 0 ? 2 : 1
        let most = min(14, (lanes == 16 ? 24 : 12) / nb)
        let inBase = UnsafePointer(x.origin - x.rowStride - 8)
        let (inRow, inPlane, inImage) = (x.rowStride, x.planeStride, x.imageStride)
        let (out, outRow, outPlane, outImage) = (y.origin, y.rowStride, y.planeStride, y.imageStride)
        let (uBase, bias) = (UnsafePointer(u.pointer), UnsafePointer(bias.pointer))
        let (cBlocks, oBlocks) = ((x.channels + 7) / 8, (outChannels + 7) / 8)
        // The 16 matrices of V (and of M) lie a cache line more than a multiple of 4 KiB apart:
        // exactly 4 KiB apart (16 tiles × 64 channels), the 16 stores of one transformed tile fell
        // into one set of the L1 cache and evicted each other (the transforms took as long as the
        // products).
        let (vStep, mStep) = (maxTiles * cPad + 16, maxTiles * oPad + 16)
        Parallel.chunks(x.n * unitsPerImage) { _, range in
            let v = UnsafeMutableRawPointer.allocate(byteCount: 16 * vStep * 4, alignment: 64).bindMemory(
                to: Float.self, capacity: 16 * vStep)
            let m = UnsafeMutableRawPointer.allocate(byteCount: 16 * mStep * 4, alignment: 64).bindMemory(
                to: Float.self, capacity: 16 * mStep)
            defer {
                v.deallocate()
                m.deallocate()
            }
            // Wrapping arithmetic for the offsets (bounded by the shapes checked in `accepts`): an
            // overflow check per address was a good part of the transforms.
            for unit in range {
                let (img, t0) = (unit / unitsPerImage, unit % unitsPerImage &* rowsPerUnit)
                let rows = min(rowsPerUnit, th &- t0)
                let tiles = rows &* tw
                // V[ξ][t][c] = (Bᵀ d B)[ξ], Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
                for cb in 0..<cBlocks {
                    for t in 0..<tiles {
                        let (ty, tx) = (t0 &+ t / tw, t % tw)
                        let d = inBase + (img &* inImage &+ cb &* inPlane &+ 2 &* ty &* inRow &+ tx &* 16)
                        let dst = v + (t &* cPad &+ cb &* 8)
                        // Rows of Bᵀ d, one input column j at a time, then the columns of (Bᵀ d) B.
                        @inline(__always) func column(_ j: Int) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
                            let (d0, d1, d2, d3) = (
                                SIMD8<Float>.load(d + j &* 8), SIMD8<Float>.load(d + (inRow &+ j &* 8)),
                                SIMD8<Float>.load(d + (2 &* inRow &+ j &* 8)), SIMD8<Float>.load(d + (3 &* inRow &+ j &* 8))
                            )
                            return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
                        }
                        let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3))
                        @inline(__always) func row(_ i: Int, _ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>, _ e: SIMD8<Float>) {
                            (a - c).store(dst + (i &* 4) &* vStep)
                            (b + c).store(dst + (i &* 4 &+ 1) &* vStep)
                            (c - b).store(dst + (i &* 4 &+ 2) &* vStep)
                            (b - e).store(dst + (i &* 4 &+ 3) &* vStep)
                        }
                        row(0, c0.0, c1.0, c2.0, c3.0)
                        row(1, c0.1, c1.1, c2.1, c3.1)
                        row(2, c0.2, c1.2, c2.2, c3.2)
                        row(3, c0.3, c1.3, c2.3, c3.3)
                    }
                }
                // M[ξ] = V[ξ] · U[ξ].
                let spans = DirectConv.split(tiles, most)
                for xi in 0..<16 {
                    let (vx, ux, mx) = (UnsafePointer(v + xi &* vStep), uBase + xi &* cPad &* oPad, m + xi &* mStep)
                    var ov = 0
                    while ov < oVectors {
                        var t = 0
                        for p in spans {
                            Self.product(
                                V.self, p, nb, vx + t &* cPad, ux + ov &* lanes, mx + (t &* oPad &+ ov &* lanes), channels: cPad,
                                oStride: oPad)
                            t &+= p
                        }
                        ov += nb
                    }
                }
                // Y = Aᵀ M A + bias (+ residual, ReLU), Aᵀ = [1 1 1 0; 0 1 −1 −1].
                for ob in 0..<oBlocks {
                    let b = SIMD8<Float>.load(bias + ob * 8)
                    for t in 0..<tiles {
                        let (ty, tx) = (t0 &+ t / tw, t % tw)
                        let src = UnsafePointer(m + (t &* oPad &+ ob &* 8))
                        // Rows of Aᵀ M, one column j at a time, then the columns of (Aᵀ M) A.
                        @inline(__always) func column(_ j: Int) -> (SIMD8<Float>, SIMD8<Float>) {
                            let (m0, m1, m2, m3) = (
                                SIMD8<Float>.load(src + j &* mStep), SIMD8<Float>.load(src + (4 &+ j) &* mStep),
                                SIMD8<Float>.load(src + (8 &+ j) &* mStep), SIMD8<Float>.load(src + (12 &+ j) &* mStep)
                            )
                            return (m0 + m1 + m2, m1 - m2 - m3)
                        }
                        let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3))
                        let o = out + (img &* outImage &+ ob &* outPlane &+ 2 &* ty &* outRow &+ tx &* 16)
                        let second = fullColumns || tx &+ 1 < tw
                        for r in 0..<(fullRows || ty &+ 1 < th ? 2 : 1) {
                            let (a, bb, c, e) = r == 0 ? (c0.0, c1.0, c2.0, c3.0) : (c0.1, c1.1, c2.1, c3.1)
                            var y0 = a + bb + c + b
                            var y1 = bb - c - e + b
                            let p = o + r &* outRow
                            if let residualOffset {
                                y0 += SIMD8<Float>.load(p + residualOffset)
                                if second { y1 += SIMD8<Float>.load(p + 8 + residualOffset) }
                            }
                            if relu {
                                y0 = y0.relu()
                                y1 = y1.relu()
                            }
                            y0.store(p)
                            if second { y1.store(p + 8) }
                        }
                    }
                }
            }
        }
    }

    /// `p` tiles × `nb` output vectors of one product: M[t][o] = Σ_c V[t][c] · U[c][o], the
    /// accumulators in registers (a broadcast V value times a U vector per multiply-add).
    @inline(__always)
    static func product<V: OutputLanes>(
        _: V.Type, _ p: Int, _ nb: Int, _ v: UnsafePointer<Float>, _ u: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
        channels: Int, oStride: Int
    ) {
        switch (p, nb) {
        case (1, 1): product(Px1.self, Blocks1.self, InlineArray<1, V>.self, v, u, m, channels, oStride)
        case (2, 1): product(Px2.self, Blocks1.self, InlineArray<2, V>.self, v, u, m, channels, oStride)
        case (3, 1): product(Px3.self, Blocks1.self, InlineArray<3, V>.self, v, u, m, channels, oStride)
        case (4, 1): product(Px4.self, Blocks1.self, InlineArray<4, V>.self, v, u, m, channels, oStride)
        case (5, 1): product(Px5.self, Blocks1.self, InlineArray<5, V>.self, v, u, m, channels, oStride)
        case (6, 1): product(Px6.self, Blocks1.self, InlineArray<6, V>.self, v, u, m, channels, oStride)
        case (7, 1): product(Px7.self, Blocks1.self, InlineArray<7, V>.self, v, u, m, channels, oStride)
        case (8, 1): product(Px8.self, Blocks1.self, InlineArray<8, V>.self, v, u, m, channels, oStride)
        case (9, 1): product(Px9.self, Blocks1.self, InlineArray<9, V>.self, v, u, m, channels, oStride)
        case (10, 1): product(Px10.self, Blocks1.self, InlineArray<10, V>.self, v, u, m, channels, oStride)
        case (11, 1): product(Px11.self, Blocks1.self, InlineArray<11, V>.self, v, u, m, channels, oStride)
        case (12, 1): product(Px12.self, Blocks1.self, InlineArray<12, V>.self, v, u, m, channels, oStride)
        case (13, 1): product(Px13.self, Blocks1.self, InlineArray<13, V>.self, v, u, m, channels, oStride)
        case (14, 1): product(Px14.self, Blocks1.self, InlineArray<14, V>.self, v, u, m, channels, oStride)
        case (1, 2): product(Px1.self, Blocks2.self, InlineArray<2, V>.self, v, u, m, channels, oStride)
        case (2, 2): product(Px2.self, Blocks2.self, InlineArray<4, V>.self, v, u, m, channels, oStride)
        case (3, 2): product(Px3.self, Blocks2.self, InlineArray<6, V>.self, v, u, m, channels, oStride)
        case (4, 2): product(Px4.self, Blocks2.self, InlineArray<8, V>.self, v, u, m, channels, oStride)
        case (5, 2): product(Px5.self, Blocks2.self, InlineArray<10, V>.self, v, u, m, channels, oStride)
        case (6, 2): product(Px6.self, Blocks2.self, InlineArray<12, V>.self, v, u, m, channels, oStride)
        case (7, 2): product(Px7.self, Blocks2.self, InlineArray<14, V>.self, v, u, m, channels, oStride)
        case (8, 2): product(Px8.self, Blocks2.self, InlineArray<16, V>.self, v, u, m, channels, oStride)
        case (9, 2): product(Px9.self, Blocks2.self, InlineArray<18, V>.self, v, u, m, channels, oStride)
        case (10, 2): product(Px10.self, Blocks2.self, InlineArray<20, V>.self, v, u, m, channels, oStride)
        case (11, 2): product(Px11.self, Blocks2.self, InlineArray<22, V>.self, v, u, m, channels, oStride)
        case (12, 2): product(Px12.self, Blocks2.self, InlineArray<24, V>.self, v, u, m, channels, oStride)
        default: preconditionFailure("no \(p)×\(nb) product tile")
        }
    }

    static func product<P: TilePixels, B: TileBlocks, let N: Int, V: OutputLanes>(
        _: P.Type, _: B.Type, _: InlineArray<N, V>.Type, _ v: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
        _ m: UnsafeMutablePointer<Float>, _ channels: Int, _ oStride: Int
    ) {
        let (np, nb, lanes) = (P.count, B.count, V.scalarCount)
        var acc = InlineArray<N, V>(repeating: V())
        // V's rows are `channels` apart (the tiles of one ξ), U's `oStride`; wrapping arithmetic
        // as in the direct kernel (the offsets were bounded when the scratch was sized).
        for c in 0..<channels {
            let uc = u + c &* oStride
            if nb == 1 {
                let w0 = V.load(uc)
                for q in 0..<np { acc[q].addProduct(V(repeating: v[c &+ q &* channels]), w0) }
            } else {
                let (w0, w1) = (V.load(uc), V.load(uc + lanes))
                for q in 0..<np {
                    let x = V(repeating: v[c &+ q &* channels])
                    acc[q].addProduct(x, w0)
                    acc[np + q].addProduct(x, w1)
                }
            }
        }
        for b in 0..<nb {
            for q in 0..<np { acc[b * np + q].storeContiguous(m + q * oStride + b * lanes) }
        }
    }
}
