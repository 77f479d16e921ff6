#if canImport(Glibc)
    import Glibc
#endif

/// A 3×3, stride-1, padding-1 convolution by Winograd's minimal filtering (Lavin & Gray, "Fast
/// Algorithms for Convolutional Neural Networks", 2016), for inference: F(4×4, 3×3) where the image
/// is large enough, else F(2×2, 3×3).
///
/// Each m × m block of output pixels ("tile") comes from an α × α block of input, α = m + 2: the
/// input block is transformed (V = Bᵀ d B), multiplied element by element with the transformed
/// filter (U = G g Gᵀ, made once) and summed over the input channels, then transformed back
/// (Y = Aᵀ M A). The sum over channels is α² independent matrix products, M[ξ] = V[ξ] · U[ξ]
/// (tiles × C times C × O). Per output pixel and channel pair that is α²/m² multiplications where
/// the direct kernel has 9: 4 for F(2×2, 3×3), 2.25 for F(4×4, 3×3). The transforms are additions
/// and multiply-adds by small constants (F(4×4, 3×3): 2, 4, 5 and 8) on the channel-blocked
/// layout, eight channels of a pixel at a time, or sixteen (two blocks) with AVX-512.
///
/// The result differs from the direct convolution by rounding only: F(2×2, 3×3) within a few
/// units in the last place of the largest partial sums, F(4×4, 3×3) (whose transforms scale by
/// up to 8 and 1/24) within a few tens. A tile's result depends on nothing but its own input, so
/// it is the same for any thread count and any grouping of tiles.
public struct WinogradConv: @unchecked Sendable {
    public let inChannels: Int
    public let outChannels: Int
    /// Output channels per vector of the matrix products (16 with AVX-512, else 8).
    let lanes: Int
    /// Input channels rounded up to a block of eight, output channels to a vector.
    let cPad: Int
    let oPad: Int
    /// U[ξ][c][o]: the transformed filter of F(2×2, 3×3) (16 positions ξ) and of F(4×4, 3×3) (36).
    let u2: Tensor
    let u4: Tensor
    let bias: Tensor

    /// Whether a convolution with this geometry can run here: 3×3, stride 1, dilation 1, padding 1
    /// on every side, dense.
    public static func applies(kernel: [Int], window: Window, groups: Int) -> Bool {
        kernel == [3, 3] && window.stride == (1, 1) && window.dilation == (1, 1) && window.pads == [1, 1, 1, 1] && groups == 1
    }

    public init(weight: Tensor, bias: Tensor?) {
        let (o, c) = (weight.shape[0], weight.shape[1])
        precondition(weight.shape[2] == 3 && weight.shape[3] == 3, "Winograd needs 3×3 filters")
        inChannels = c
        outChannels = o
        lanes = VectorUnits.wide ? 16 : 8
        cPad = (c + 7) / 8 * 8
        oPad = (o + lanes - 1) / lanes * lanes
        u2 = Self.transformed(weight, F2.self, cPad: cPad, oPad: oPad)
        u4 = Self.transformed(weight, F4.self, cPad: cPad, oPad: oPad)
        self.bias = Tensor(zeros: [oPad])
        if let bias { for oc in 0..<o { self.bias[oc] = bias[oc] } }
    }

    /// U[ξ][c][o] = (G g Gᵀ)[ξ] for every filter g of `weight`, in double precision, then rounded.
    static func transformed<T: WinogradTile>(_ weight: Tensor, _: T.Type, cPad: Int, oPad: Int) -> Tensor {
        let (o, c, a) = (weight.shape[0], weight.shape[1], T.alpha)
        let g = T.g
        let u = Tensor(zeros: [a * a * cPad * oPad])
        let wp = weight.pointer
        var gg = [Double](repeating: 0, count: a * 3)
        for oc in 0..<o {
            for ic in 0..<c {
                let f = wp + (oc * c + ic) * 9
                // G g (α × 3), then (G g) Gᵀ (α × α).
                for i in 0..<a {
                    for j in 0..<3 { gg[i * 3 + j] = (0..<3).reduce(0.0) { $0 + g[i][$1] * Double(f[$1 * 3 + j]) } }
                }
                for i in 0..<a {
                    for j in 0..<a {
                        let value = (0..<3).reduce(0.0) { $0 + gg[i * 3 + $1] * g[j][$1] }
                        u[((i * a + j) * cPad + ic) * oPad + oc] = Float(value)
                    }
                }
            }
        }
        return u
    }

    /// The tile size that needs fewer multiplications for an image of `h` × `w` pixels: 4 where
    /// both sides have 3 pixels or more (5 × 8: 4 tiles of 36 against 12 of 16), except 5 × 5 (a
    /// tie); 2 where a side has 1 or 2 (2 × 4: 2 tiles of 16 against 1 of 36).
    public static func tile(h: Int, w: Int) -> Int {
        guard largeTiles else { return 2 }
        let tiles4 = (h + 3) / 4 * ((w + 3) / 4) * 36
        let tiles2 = (h + 1) / 2 * ((w + 1) / 2) * 16
        return tiles4 < tiles2 ? 4 : 2
    }

    /// Whether F(4×4, 3×3) runs at all (`--debug-winograd small` keeps to F(2×2, 3×3), to compare).
    public static var largeTiles: Bool { KernelPolicy.winograd == .on }

    /// The zero halo that tiles of `m` × `m` outputs read around an image of `h` × `w`: the
    /// padding, and the pixels past the edge that the last tiles read (their outputs there are
    /// not stored).
    public static func halo(h: Int, w: Int, tile m: Int) -> Int {
        1 + max((h + m - 1) / m * m - h, (w + m - 1) / m * m - w)
    }

    /// The zero halo an input of `h` × `w` pixels needs for the tile size `tile(h:w:)` picks.
    public static func halo(h: Int, w: Int) -> Int { halo(h: h, w: w, tile: tile(h: h, w: w)) }

    /// The tile size that runs on `x`: the one `tile(h:w:)` picks where the halo allows, else
    /// 2 where that one's halo is there, else nil.
    func tile(for x: BlockedTensor) -> Int? {
        guard x.channels == inChannels, x.h > 0, x.w > 0, KernelPolicy.winogradPays(channels: inChannels, h: x.h, w: x.w) else {
            return nil
        }
        let preferred = Self.tile(h: x.h, w: x.w)
        if x.pad >= Self.halo(h: x.h, w: x.w, tile: preferred) { return preferred }
        return x.pad >= Self.halo(h: x.h, w: x.w, tile: 2) ? 2 : nil
    }

    /// Whether `run` takes this input: the channels it was made for and a halo one of the tile
    /// sizes can read (`halo(h:w:)`, or F(2×2, 3×3)'s where that is less).
    public func accepts(_ x: BlockedTensor) -> Bool { tile(for: x) != nil }

    /// The convolution of `x` (see `accepts`) with an epilogue (its residual added before the
    /// activation, which must map 0 to 0), output with a zero halo of `outPad`. `tile` forces a
    /// tile size (tests compare the two).
    public func callAsFunction(_ x: BlockedTensor, _ epilogue: Epilogue = .none, outPad: Int = 0, tile forced: Int? = nil) throws
        -> BlockedTensor
    {
        precondition(epilogue.preservesZero, "a convolution's epilogue must map 0 to 0")
        let (relu, residual) = (epilogue.isReLU, epilogue.residual)
        guard let chosen = tile(for: x), forced.map({ x.pad >= Self.halo(h: x.h, w: x.w, tile: $0) }) ?? true else {
            throw TensorError(
                "Winograd convolution needs \(inChannels) channels and a halo of \(Self.halo(h: x.h, w: x.w)); got \(x.shape) with halo \(x.pad)"
            )
        }
        let m = forced ?? chosen
        precondition(m == 2 || m == 4, "Winograd tiles are 2×2 or 4×4")
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
                    if m == 4 {
                        run(SIMD16<Float>.self, F4.self, x, y: y, residualOffset: residualOffset, relu: relu)
                    } else {
                        run(SIMD16<Float>.self, F2.self, x, y: y, residualOffset: residualOffset, relu: relu)
                    }
                    return
                }
            #endif
            if m == 4 {
                run(SIMD8<Float>.self, F4.self, x, y: y, residualOffset: residualOffset, relu: relu)
            } else {
                run(SIMD8<Float>.self, F2.self, x, y: y, residualOffset: residualOffset, relu: relu)
            }
        }
        if epilogue.activation != nil { epilogue.apply(to: y.data) }
        return y
    }

    /// Tiles per unit, at most (`--debug-winograd-tiles` sets it, for measurements).
    static var unitTiles: Int { max(1, KernelPolicy.winogradTiles) }

    func run<V: OutputLanes, T: WinogradTile>(
        _: V.Type, _: T.Type, _ x: BlockedTensor, y: BlockedTensor, residualOffset: Int?, relu: Bool
    ) {
        let (m, positions) = (T.m, T.alpha * T.alpha)
        let (h, w) = (x.h, x.w)
        let (th, tw) = ((h + m - 1) / m, (w + m - 1) / m)
        // A unit is a run of consecutive tiles (of one image or of several): enough for each vector
        // of U loaded to be used several times, few enough that V and M stay in the cache.
        let (perImage, total) = (th * tw, x.n * th * tw)
        let maxTiles = min(total, Self.unitTiles)
        let units = (total + maxTiles - 1) / maxTiles
        let (cPad, oPad, lanes) = (cPad, oPad, V.scalarCount)
        let oVectors = oPad / lanes
        // Output vectors per product tile, and tiles per product tile: as many accumulators as the
        // direct kernel keeps (24 in 32 registers, 12 in 16).
        let nb = oVectors % 2 == 0 ? 2 : 1
        let most = min(14, (lanes == 16 ? 24 : 12) / nb)
        let inBase = UnsafePointer(x.origin - x.rowStride - 8)
        let (inRow, inPlane, inImage) = (x.rowStride, x.planeStride, x.imageStride)
        let (out, outRow, outPlane, outImage) = (y.origin, y.rowStride, y.planeStride, y.imageStride)
        let (uBase, bias) = (UnsafePointer((m == 4 ? u4 : u2).pointer), UnsafePointer(bias.pointer))
        let (cBlocks, oBlocks) = ((x.channels + 7) / 8, (outChannels + 7) / 8)
        // The matrices of V (and of M) lie a cache line more than a multiple of 4 KiB apart:
        // exactly 4 KiB apart (16 tiles × 64 channels), the stores of one transformed tile fell
        // into one set of the L1 cache and evicted each other (the transforms took as long as the
        // products).
        let (vStep, mStep) = (maxTiles * cPad + 16, maxTiles * oPad + 16)
        Parallel.chunks(units) { _, range in
            let v = UnsafeMutableRawPointer.allocate(byteCount: positions * vStep * 4, alignment: 64).bindMemory(
                to: Float.self, capacity: positions * vStep)
            let mm = UnsafeMutableRawPointer.allocate(byteCount: positions * mStep * 4, alignment: 64).bindMemory(
                to: Float.self, capacity: positions * mStep)
            // Per tile of a unit: its input and output offsets, and its output rows and columns
            // inside the image.
            let table = UnsafeMutablePointer<Int>.allocate(capacity: 4 * maxTiles)
            defer {
                v.deallocate()
                mm.deallocate()
                table.deallocate()
            }
            // Wrapping arithmetic for the offsets (bounded by the shapes checked in `accepts`): an
            // overflow check per address was a good part of the transforms.
            for unit in range {
                let first = unit &* maxTiles
                let tiles = min(maxTiles, total &- first)
                for t in 0..<tiles {
                    let (img, r) = ((first &+ t) / perImage, (first &+ t) % perImage)
                    let (ty, tx) = (r / tw, r % tw)
                    table[4 &* t] = img &* inImage &+ m &* ty &* inRow &+ m &* tx &* 8
                    table[4 &* t &+ 1] = img &* outImage &+ m &* ty &* outRow &+ m &* tx &* 8
                    table[4 &* t &+ 2] = min(m, h &- m &* ty)
                    table[4 &* t &+ 3] = min(m, w &- m &* tx)
                }
                // V[ξ][t][c] = (Bᵀ d B)[ξ], two blocks of eight channels at a time where the
                // products have 16 lanes.
                var cb = 0
                while cb < cBlocks {
                    let pair = lanes == 16 && cb &+ 1 < cBlocks
                    for t in 0..<tiles {
                        let (d, dst) = (inBase + (table[4 &* t] &+ cb &* inPlane), v + (t &* cPad &+ cb &* 8))
                        if pair {
                            T.input(V.self, d, row: inRow, blockStride: inPlane, dst, step: vStep)
                        } else {
                            T.input(SIMD8<Float>.self, d, row: inRow, blockStride: inPlane, dst, step: vStep)
                        }
                    }
                    cb &+= pair ? 2 : 1
                }
                // M[ξ] = V[ξ] · U[ξ].
                let spans = DirectConv.split(tiles, most)
                for xi in 0..<positions {
                    let (vx, ux, mx) = (UnsafePointer(v + xi &* vStep), uBase + xi &* cPad &* oPad, mm + xi &* mStep)
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
                // Y = Aᵀ M A + bias (+ residual, ReLU), the rows and columns inside the image.
                var ob = 0
                while ob < oBlocks {
                    if lanes == 16 && ob &+ 1 < oBlocks {
                        Self.store(
                            V.self, T.self, mm, tiles: tiles, table: table, block: ob, out: out, mStep: mStep, oPad: oPad, bias: bias,
                            residualOffset: residualOffset, relu: relu, outRow: outRow, outPlane: outPlane)
                        ob &+= 2
                    } else {
                        Self.store(
                            SIMD8<Float>.self, T.self, mm, tiles: tiles, table: table, block: ob, out: out, mStep: mStep, oPad: oPad,
                            bias: bias, residualOffset: residualOffset, relu: relu, outRow: outRow, outPlane: outPlane)
                        ob &+= 1
                    }
                }
            }
        }
    }

    /// Y = Aᵀ M A + bias (+ residual, ReLU) for the output channels of `block` (and the next one
    /// where `V` has 16 lanes), over the `tiles` tiles of a unit: the rows and columns of each
    /// tile that lie inside the image.
    @inline(__always)
    static func store<V: OutputLanes, T: WinogradTile>(
        _: V.Type, _: T.Type, _ mm: UnsafeMutablePointer<Float>, tiles: Int, table: UnsafeMutablePointer<Int>, block: Int,
        out: UnsafeMutablePointer<Float>, mStep: Int, oPad: Int, bias: UnsafePointer<Float>, residualOffset: Int?, relu: Bool,
        outRow: Int, outPlane: Int
    ) {
        let m = T.m
        let b = V.load(bias + block &* 8)
        var ys = InlineArray<16, V>(repeating: V())
        for t in 0..<tiles {
            let o = out + (table[4 &* t &+ 1] &+ block &* outPlane)
            let (rows, columns) = (table[4 &* t &+ 2], table[4 &* t &+ 3])
            T.output(V.self, UnsafePointer(mm + (t &* oPad &+ block &* 8)), step: mStep, &ys)
            @inline(__always) func put(_ r: Int, _ c: Int) {
                let p = o + (r &* outRow &+ c &* 8)
                var y = ys[r &* m &+ c] + b
                if let residualOffset { y += V.load(p + residualOffset, blockStride: outPlane) }
                if relu { y = y.relu() }
                y.store(p, blockStride: outPlane)
            }
            if rows == m && columns == m {
                for r in 0..<m { for c in 0..<m { put(r, c) } }
            } else {
                for r in 0..<rows { for c in 0..<columns { put(r, c) } }
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

/// One of Winograd's F(m × m, 3×3): its filter transform G, and its input and output transforms
/// on one or two blocks of eight channels of a pixel at a time (`V` of 8 or 16 lanes).
protocol WinogradTile {
    /// Output pixels per side of a tile.
    static var m: Int { get }
    /// Input pixels per side, m + 2.
    static var alpha: Int { get }
    /// G, α × 3, row by row.
    static var g: [[Double]] { get }
    /// V = Bᵀ d B for the α × α pixels at `d` (eight floats apart, rows `row` floats apart, the
    /// second block of channels `blockStride` after the first), each of the α² results stored
    /// `step` floats after the one before, from `dst`.
    static func input<V: OutputLanes>(
        _: V.Type, _ d: UnsafePointer<Float>, row: Int, blockStride: Int, _ dst: UnsafeMutablePointer<Float>, step: Int)
    /// Y = Aᵀ M A for the α² vectors at `src` (`step` floats apart): the m × m output pixels, row
    /// by row, in the first m² elements of `y`.
    static func output<V: OutputLanes>(_: V.Type, _ src: UnsafePointer<Float>, step: Int, _ y: inout InlineArray<16, V>)
}

extension WinogradTile {
    /// The `scalarCount` channels of a pixel (one block of eight or two, `blockStride` apart).
    @inline(__always)
    static func load<V: OutputLanes>(_: V.Type, _ p: UnsafePointer<Float>, blockStride: Int) -> V {
        V.load(UnsafeMutablePointer(mutating: p), blockStride: blockStride)
    }
}

/// F(2×2, 3×3): Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
/// Aᵀ = [1 1 1 0; 0 1 −1 −1].
enum F2: WinogradTile {
    static var m: Int { 2 }
    static var alpha: Int { 4 }
    static var g: [[Double]] { [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]] }

    @inline(__always)
    static func bt<V: OutputLanes>(_ d0: V, _ d1: V, _ d2: V, _ d3: V) -> (V, V, V, V) { (d0 - d2, d1 + d2, d2 - d1, d1 - d3) }

    @inline(__always)
    static func input<V: OutputLanes>(
        _: V.Type, _ d: UnsafePointer<Float>, row: Int, blockStride: Int, _ dst: UnsafeMutablePointer<Float>, step: Int
    ) {
        // Bᵀ d, one input column j at a time, then the rows of (Bᵀ d) B.
        @inline(__always) func column(_ j: Int) -> (V, V, V, V) {
            let p = d + j &* 8
            @inline(__always) func at(_ i: Int) -> V { load(V.self, p + i &* row, blockStride: blockStride) }
            return bt(at(0), at(1), at(2), at(3))
        }
        let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3))
        @inline(__always) func store(_ i: Int, _ a: V, _ b: V, _ c: V, _ e: V) {
            let (v0, v1, v2, v3) = bt(a, b, c, e)
            v0.storeContiguous(dst + (i &* 4) &* step)
            v1.storeContiguous(dst + (i &* 4 &+ 1) &* step)
            v2.storeContiguous(dst + (i &* 4 &+ 2) &* step)
            v3.storeContiguous(dst + (i &* 4 &+ 3) &* step)
        }
        store(0, c0.0, c1.0, c2.0, c3.0)
        store(1, c0.1, c1.1, c2.1, c3.1)
        store(2, c0.2, c1.2, c2.2, c3.2)
        store(3, c0.3, c1.3, c2.3, c3.3)
    }

    @inline(__always)
    static func at<V: OutputLanes>(_ m0: V, _ m1: V, _ m2: V, _ m3: V) -> (V, V) { (m0 + m1 + m2, m1 - m2 - m3) }

    @inline(__always)
    static func output<V: OutputLanes>(_: V.Type, _ src: UnsafePointer<Float>, step: Int, _ y: inout InlineArray<16, V>) {
        // Aᵀ M, one column j at a time, then the rows of (Aᵀ M) A.
        @inline(__always) func column(_ j: Int) -> (V, V) {
            at(V.load(src + j &* step), V.load(src + (4 &+ j) &* step), V.load(src + (8 &+ j) &* step), V.load(src + (12 &+ j) &* step))
        }
        let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3))
        (y[0], y[1]) = at(c0.0, c1.0, c2.0, c3.0)
        (y[2], y[3]) = at(c0.1, c1.1, c2.1, c3.1)
    }
}

/// F(4×4, 3×3), with the points 0, ±1, ±2 and ∞:
/// Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
/// G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1],
/// Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
enum F4: WinogradTile {
    static var m: Int { 4 }
    static var alpha: Int { 6 }
    static var g: [[Double]] {
        [
            [1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6], [1.0 / 24, 1.0 / 12, 1.0 / 6],
            [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1],
        ]
    }

    /// Bᵀ times one column of six, in 14 additions and multiply-adds.
    @inline(__always)
    static func bt<V: OutputLanes>(_ d0: V, _ d1: V, _ d2: V, _ d3: V, _ d4: V, _ d5: V) -> (V, V, V, V, V, V) {
        let (s, q) = (d3 + d4, d1 + d2)
        let (e, f) = (d4 - d3, d1 - d2)
        let (p, r) = (d4 - d2, d3 - d1)
        return (
            d4.addingProduct(4, d0).addingProduct(-5, d2), s.addingProduct(-4, q), e.addingProduct(4, f),
            p.addingProduct(2, r), p.addingProduct(-2, r), d5.addingProduct(4, d1).addingProduct(-5, d3)
        )
    }

    @inline(__always)
    static func input<V: OutputLanes>(
        _: V.Type, _ d: UnsafePointer<Float>, row: Int, blockStride: Int, _ dst: UnsafeMutablePointer<Float>, step: Int
    ) {
        // Bᵀ d, one input column j at a time, then the rows of (Bᵀ d) B.
        @inline(__always) func column(_ j: Int) -> (V, V, V, V, V, V) {
            let p = d + j &* 8
            @inline(__always) func at(_ i: Int) -> V { load(V.self, p + i &* row, blockStride: blockStride) }
            return bt(at(0), at(1), at(2), at(3), at(4), at(5))
        }
        let (c0, c1, c2, c3, c4, c5) = (column(0), column(1), column(2), column(3), column(4), column(5))
        @inline(__always) func store(_ i: Int, _ v: (V, V, V, V, V, V)) {
            let base = dst + (i &* 6) &* step
            v.0.storeContiguous(base)
            v.1.storeContiguous(base + step)
            v.2.storeContiguous(base + 2 &* step)
            v.3.storeContiguous(base + 3 &* step)
            v.4.storeContiguous(base + 4 &* step)
            v.5.storeContiguous(base + 5 &* step)
        }
        store(0, bt(c0.0, c1.0, c2.0, c3.0, c4.0, c5.0))
        store(1, bt(c0.1, c1.1, c2.1, c3.1, c4.1, c5.1))
        store(2, bt(c0.2, c1.2, c2.2, c3.2, c4.2, c5.2))
        store(3, bt(c0.3, c1.3, c2.3, c3.3, c4.3, c5.3))
        store(4, bt(c0.4, c1.4, c2.4, c3.4, c4.4, c5.4))
        store(5, bt(c0.5, c1.5, c2.5, c3.5, c4.5, c5.5))
    }

    /// Aᵀ times one column of six, in 10 additions and multiply-adds.
    @inline(__always)
    static func at<V: OutputLanes>(_ m0: V, _ m1: V, _ m2: V, _ m3: V, _ m4: V, _ m5: V) -> (V, V, V, V) {
        let (a, b) = (m1 + m2, m1 - m2)
        let (c, e) = (m3 + m4, m3 - m4)
        return (m0 + a + c, b.addingProduct(2, e), a.addingProduct(4, c), (b + m5).addingProduct(8, e))
    }

    @inline(__always)
    static func output<V: OutputLanes>(_: V.Type, _ src: UnsafePointer<Float>, step: Int, _ y: inout InlineArray<16, V>) {
        // Aᵀ M, one column j at a time, then the rows of (Aᵀ M) A.
        @inline(__always) func column(_ j: Int) -> (V, V, V, V) {
            let p = src + j &* step
            let s6 = 6 &* step
            return at(V.load(p), V.load(p + s6), V.load(p + 2 &* s6), V.load(p + 3 &* s6), V.load(p + 4 &* s6), V.load(p + 5 &* s6))
        }
        let (c0, c1, c2, c3, c4, c5) = (column(0), column(1), column(2), column(3), column(4), column(5))
        (y[0], y[1], y[2], y[3]) = at(c0.0, c1.0, c2.0, c3.0, c4.0, c5.0)
        (y[4], y[5], y[6], y[7]) = at(c0.1, c1.1, c2.1, c3.1, c4.1, c5.1)
        (y[8], y[9], y[10], y[11]) = at(c0.2, c1.2, c2.2, c3.2, c4.2, c5.2)
        (y[12], y[13], y[14], y[15]) = at(c0.3, c1.3, c2.3, c3.3, c4.3, c5.3)
    }
}
