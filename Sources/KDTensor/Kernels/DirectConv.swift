/// A convolution whose weights are packed once for the direct kernel: every output pixel is
/// accumulated in registers, eight output channels per 256-bit vector, from broadcast input
/// values — no column matrix, no GEMM call, the input read from cache (MLAS's NCHWc scheme).
/// Tiles of 6 output pixels × 16 output channels keep 12 accumulators in registers, so each
/// weight vector loaded is used six times and each input value broadcast twice.
///
/// Input is either channel-blocked (`inBlock` 8) or plain NCHW (`inBlock` 1, for the few
/// channels of an image); output is always blocked.
public struct DirectConv: @unchecked Sendable {
    public let outChannels: Int
    public let inChannels: Int
    /// Input channels per block of the input layout: 8 (blocked) or 1 (NCHW).
    public let inBlock: Int
    public let window: Window
    let kh: Int
    let kw: Int
    let inBlocks: Int
    let outBlocks: Int
    /// Output channels per vector: 16 (a 512-bit vector spanning two output blocks) where the
    /// build has AVX-512 and the blocks pair up or (blocked input, three blocks or more) the last
    /// vector holds one block, else 8.
    public let lanes: Int
    /// Whether stride-1 passes run on the pixel-vectorised kernel (DirectConv+Pixels.swift).
    public let pixelPath: Bool
    /// Whether multi-row tiles over NCHW input at stride 1 slide along the kernel's columns
    /// (DirectConv+Sliding.swift): where the geometry allows, in an AVX-512 build (the tiles are
    /// 16 lanes wide).
    public let sliding: Bool
    /// [⌈O/lanes⌉][⌈C/inBlock⌉][kh][kw][inBlock][lanes]
    let packed: Tensor
    let bias: Tensor
    /// The same convolution by Winograd's F(2×2, 3×3), where asked for and the geometry allows;
    /// blocked inputs it accepts (a halo, an even size) go there.
    public let winograd: WinogradConv?
    /// The epilogue's activation other than ReLU for the call under way (set on a copy by
    /// `callAsFunction`), applied to each output row while it is in cache.
    var activation: Activation?
    /// ReLU6 and other clips to [0, upper]: applied in registers with the ReLU (set on a copy by
    /// `run`); infinity when the activation is not such a clip.
    var upper: Float = .infinity
    /// Whether unit-stride tiles over blocked input take the straight-line ones
    /// (DirectConv+Tiles.generated.swift); false keeps the generic tile (tests compare the two).
    var straightLineTiles = true

    /// Whether the convolution needs no halo around its blocked input: 1×1, stride 1, unpadded.
    public var readsWithoutHalo: Bool {
        kh == 1 && kw == 1 && inBlock == 8 && window.stride == (1, 1) && window.pads.allSatisfy { $0 == 0 }
    }

    /// Whether the direct kernel handles a convolution with these groups (dense ones only).
    public static func applies(groups: Int) -> Bool { groups == 1 }

    /// The input layout the kernel reads best for `channels` input channels.
    public static func inBlock(forChannels c: Int) -> Int { c <= 4 ? 1 : 8 }

    /// The vector widths (output channels per vector) this build offers for `outChannels`. With
    /// an odd number of output blocks, a 16-lane kernel's last vector holds one block (it loads and
    /// stores its low half): offered on blocked input for three blocks or more (116 outputs run as
    /// 7½ vectors of 16 instead of 15 of 8).
    public static func laneChoices(outChannels: Int, inBlock: Int = 8) -> [Int] {
        let blocks = (outChannels + 7) / 8
        guard VectorUnits.wide else { return [8] }
        return blocks % 2 == 0 || (inBlock == 8 && blocks >= 3) ? [16, 8] : [8]
    }

    /// `lanes` nil picks the widest of `laneChoices`; `allowPixelPath` false keeps a convolution
    /// that would take the pixel kernel on the channel one, and `allowSliding` false keeps tiles
    /// tap by tap (tests use both to cover every kernel).
    public init(
        weight: Tensor, bias: Tensor?, window: Window, inBlock: Int, lanes: Int? = nil, allowPixelPath: Bool = true,
        allowSliding: Bool = DirectConv.slidingColumns, winograd: Bool = false
    ) {
        precondition(inBlock == 1 || inBlock == 8)
        let (o, c, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        self.outChannels = o
        self.inChannels = c
        self.inBlock = inBlock
        self.window = window
        self.kh = kh
        self.kw = kw
        inBlocks = (c + inBlock - 1) / inBlock
        outBlocks = (o + 7) / 8
        let choices = Self.laneChoices(outChannels: o, inBlock: inBlock)
        let lanes = lanes ?? choices[0]
        precondition(choices.contains(lanes), "no \(lanes)-lane kernel for \(o) output channels in this build")
        self.lanes = lanes
        pixelPath = allowPixelPath && Self.pixelKernelFits(inBlock: inBlock, outChannels: o, lanes: lanes)
        sliding = allowSliding && VectorUnits.wide && Self.slides(inBlock: inBlock, kernelWidth: kw, window: window)
        let vectors = (outBlocks * 8 + lanes - 1) / lanes
        packed = Tensor(zeros: [vectors * inBlocks * kh * kw * inBlock * lanes])
        let wp = weight.pointer
        for oc in 0..<o {
            for ic in 0..<c {
                for k in 0..<(kh * kw) {
                    let (ob, lane, icb, i) = (oc / lanes, oc % lanes, ic / inBlock, ic % inBlock)
                    packed[((((ob * inBlocks + icb) * kh * kw + k) * inBlock + i) * lanes) + lane] = wp[(oc * c + ic) * kh * kw + k]
                }
            }
        }
        self.bias = Tensor(zeros: [vectors * lanes])
        if let bias { for oc in 0..<o { self.bias[oc] = bias[oc] } }
        self.winograd =
            winograd && inBlock == 8 && WinogradConv.applies(kernel: [kh, kw], window: window, groups: 1)
            ? WinogradConv(weight: weight, bias: bias) : nil
    }

    /// Convolution of a blocked input (`inBlock` 8) with an epilogue (its residual, the output's
    /// shape, added before the activation: a ResNet block's `conv → add → relu` in one pass over
    /// the output; its activation must map 0 to 0, since it also runs over the zero halo and
    /// padding lanes). The output gets a zero halo of `outPad`. Where the input's halo covers the
    /// padding, every tile is an interior one.
    public func callAsFunction(_ x: BlockedTensor, _ epilogue: Epilogue = .none, outPad: Int = 0) throws -> BlockedTensor {
        precondition(inBlock == 8, "this convolution was packed for NCHW input")
        precondition(epilogue.preservesZero, "a convolution's epilogue must map 0 to 0")
        guard x.channels == inChannels else {
            throw TensorError("conv2d input \(x.shape) does not match \(inChannels) input channels")
        }
        var conv = self
        conv.activation = epilogue.activation
        let (relu, residual) = (epilogue.isReLU, epilogue.residual)
        if let winograd, winograd.accepts(x) {
            return conv.applyEpilogue(try winograd(x, Epilogue(relu: relu, residual: residual), outPad: outPad))
        }
        let p = window.pads
        var input = Input(
            base: UnsafePointer(x.origin), n: x.n, h: x.h, w: x.w, rowStride: x.rowStride, planeStride: x.planeStride,
            imageStride: x.imageStride)
        if x.pad >= p.max() ?? 0 {
            input.base -= p[0] * x.rowStride + p[1] * 8
            input.h += p[0] + p[2]
            input.w += p[1] + p[3]
            return try conv.run(input, pads: [0, 0, 0, 0], relu: relu, residual: residual, outPad: outPad)
        }
        return try conv.run(input, pads: p, relu: relu, residual: residual, outPad: outPad)
    }

    /// Convolution of an NCHW input (any `inBlock`; converted when the packing wants blocks).
    public func callAsFunction(plain x: Tensor, _ epilogue: Epilogue = .none, outPad: Int = 0) throws -> BlockedTensor {
        guard x.rank == 4, x.shape[1] == inChannels else {
            throw TensorError("conv2d input \(x.shape) does not match \(inChannels) input channels")
        }
        let p = window.pads
        if inBlock == 8 { return try self(BlockedTensor(x, pad: p.max() ?? 0), epilogue, outPad: outPad) }
        precondition(epilogue.preservesZero, "a convolution's epilogue must map 0 to 0")
        var conv = self
        conv.activation = epilogue.activation
        let (input, storage) = paddedPlain(x)
        return try withExtendedLifetime(storage) {
            try conv.run(input, pads: [0, 0, 0, 0], relu: epilogue.isReLU, residual: epilogue.residual, outPad: outPad)
        }
    }

    /// An NCHW input (`inBlock` 1) as the kernel reads it, with the window's padding in place: a
    /// zero-padded copy when there is padding (with a few NCHW channels it is cheap, and spares
    /// the border passes, which with one lane per tap would cost more than the copy). The tensor
    /// returned must outlive the reads.
    func paddedPlain(_ x: Tensor) -> (Input, Tensor) {
        let p = window.pads
        let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        func plainInput(_ t: Tensor, _ h: Int, _ w: Int) -> Input {
            Input(base: UnsafePointer(t.pointer), n: n, h: h, w: w, rowStride: w, planeStride: h * w, imageStride: inChannels * h * w)
        }
        guard p.contains(where: { $0 != 0 }) else { return (plainInput(x, h, w), x) }
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3])
        let padded = Tensor(uninitialized: [n * inChannels * hp * wp])
        for u in 0..<(n * inChannels) {
            let plane = padded.pointer + u * hp * wp
            plane.update(repeating: 0, count: p[0] * wp)
            for i in 0..<h {
                let row = plane + (i + p[0]) * wp
                row.update(repeating: 0, count: p[1])
                (row + p[1]).update(from: x.pointer + (u * h + i) * w, count: w)
                (row + p[1] + w).update(repeating: 0, count: p[3])
            }
            (plane + (h + p[0]) * wp).update(repeating: 0, count: p[2] * wp)
        }
        return (plainInput(padded, hp, wp), padded)
    }

    /// Where a convolution reads: pixel (0, 0) of channel group 0 of image 0 of the region it may
    /// read (h × w pixels), and the strides in floats between rows, groups of `inBlock` channels
    /// and images.
    struct Input {
        var base: UnsafePointer<Float>
        var n: Int
        var h: Int
        var w: Int
        var rowStride: Int
        var planeStride: Int
        var imageStride: Int
    }

    /// Tile shapes the kernel has, for 8-lane vectors: up to `pixels` output pixels of a row ×
    /// `blocks` vectors of output channels, 12 accumulators at most (16 vector registers: the rest
    /// hold weights and a broadcast input value). 8 × 1 is for convolutions with at most eight
    /// outputs (12 × 1 spilled).
    static let shapes8: [(pixels: Int, blocks: Int)] = [(6, 2), (4, 3), (3, 4), (8, 1)]
    /// For 16-lane vectors (AVX-512: 32 registers): up to 24 accumulators.
    static let shapes16: [(pixels: Int, blocks: Int)] = [(12, 2), (14, 1)]
    /// Rows of at most 16 pixels (8 × 8 and 16 × 16 maps) also take 8 pixels × 3 vectors, first
    /// among equals: where 12 × 2 splits a row of 8 or 16 into tiles of 8 × 2, the input is read
    /// once per three vectors rather than two, and an odd count of vectors (40 or 112 outputs) no
    /// longer leaves a tile of one. Measured on one image, one thread (AVX-512): 240 → 40 on
    /// 16 × 16 48.3 → 37.2 µs, 672 → 112 on 8 × 8 68.8 → 60.6 µs, 96 → 576 on 8 × 8 48.2 → 46.0 µs;
    /// on 32 × 32 maps 11 × 2 stays ahead (144 → 24: 65.2 µs against 70.1 in tiles of 8 × 2).
    static let shapes16Narrow: [(pixels: Int, blocks: Int)] = [(8, 3)] + shapes16

    /// The tile shape with the fewest estimated cycles for a row of `width` pixels and `blocks`
    /// output vectors. Per input lane a tile of p pixels × b vectors issues p·b FMAs (2 per cycle),
    /// p + b loads (2 per cycle), and each accumulator's chain waits for the FMA latency (~4.5
    /// cycles on Zen 2/3, 4 on recent Xeons): small tiles are latency-bound, which is why widths
    /// split evenly.
    static func shape(width: Int, blocks: Int, lanes: Int = 8) -> (pixels: Int, blocks: Int) {
        func split(_ total: Int, _ most: Int) -> [Int] {
            let parts = (total + most - 1) / most
            return (0..<parts).map { total / parts + ($0 < total % parts ? 1 : 0) }
        }
        func cycles(_ s: (pixels: Int, blocks: Int)) -> Double {
            var sum = 0.0
            for p in split(width, s.pixels) {
                for b in split(blocks, s.blocks) {
                    sum += max(Double(p * b) / 2, Double(p + b) / 2, 4.5)
                }
            }
            return sum
        }
        return (lanes == 16 ? (width <= 16 ? shapes16Narrow : shapes16) : shapes8).min { cycles($0) < cycles($1) }!
    }

    /// `total` in `parts` as even as possible.
    static func split(_ total: Int, _ most: Int) -> [Int] {
        let parts = (total + most - 1) / most
        return (0..<parts).map { total / parts + ($0 < total % parts ? 1 : 0) }
    }

    /// Rows × pixels of the multi-row tiles for a single output vector (16 channels) over an
    /// interior output of `width` × `height`: the shape whose smallest tile has the most
    /// accumulators (28 wide: 2 rows × 14, 28 of the 32 registers, a stage of resnet8 6 % faster
    /// than with 3 × 7; 32: 3 × 8; 10: 2 × 10), or nil when one row of up to 14 pixels is as good.
    static func rowTile(width: Int, height: Int) -> (rows: Int, pixels: Int)? {
        var best: (rows: Int, pixels: Int, accumulators: Int)?
        for (rows, most) in [(3, 8), (2, 14), (1, 14)] where rows <= height {
            let smallest = split(width, most).min()!
            guard rows == 1 || smallest >= 5 else { continue }
            let accumulators = smallest * rows
            if best == nil || accumulators > best!.accumulators { best = (rows, most, accumulators) }
        }
        guard let best, best.rows > 1 else { return nil }
        return (best.rows, best.pixels)
    }

    func run(_ x: Input, pads: [Int], relu: Bool, residual: BlockedTensor?, outPad: Int) throws -> BlockedTensor {
        // A clip to [0, u] (ReLU6) is a ReLU with a ceiling: in registers, not a pass over the output.
        if !relu, case .clip(let lo, let hi)? = activation, lo == 0, hi > 0, upper == .infinity {
            var conv = self
            conv.activation = nil
            conv.upper = hi
            return try conv.run(x, pads: pads, relu: true, residual: residual, outPad: outPad)
        }
        var g = window
        g.pads = pads
        let ho = try g.outputSize(x.h, axis: 0)
        let wo = try g.outputSize(x.w, axis: 1)
        var residual = residual
        if let r = residual {
            guard r.shape == [x.n, outChannels, ho, wo] else {
                throw TensorError("residual \(r.shape) does not match the convolution's output \([x.n, outChannels, ho, wo])")
            }
            residual = r.withPad(outPad)
        }
        // The row loops clear the halo around the rows they write; the pixel path clears it first.
        let y = BlockedTensor(uninitialized: x.n, channels: outChannels, h: ho, w: wo, pad: outPad, zeroHalo: false)
        #if KDTOOL_AVX512
            if pixelPathApplies(g: g, wo: wo, residual: residual) {
                y.zeroHalo()
                runPixels(SIMD16<Float>.self, x, ho: ho, wo: wo, relu: relu, y: y)
                return applyEpilogue(y)
            }
        #endif
        run(x, g: g, ho: ho, wo: wo, into: Output(y), residual: residual, relu: relu, halo: outPad)
        return y
    }

    /// Zeroes the halo (`pad` wide) around output row `oi` of image `img` in every block: its side
    /// columns, and the rows above the first row and below the last. Rows are split between
    /// workers, so each clears its own rows' halo while they are in its cache.
    @inline(__always)
    func clearHalo(_ out: Output, img: Int, rows: Range<Int>, ho: Int, wo: Int, pad: Int, blocks: Range<Int>? = nil) {
        guard pad > 0 else { return }
        // Vector stores, not memset: a side is a vector or two per row.
        let (row, right, zero) = (out.rowStride, (wo + pad) * 8, SIMD8<Float>())
        for blk in blocks ?? 0..<outBlocks {
            let base = out.origin + img * out.imageStride + blk * out.planeStride - pad * 8
            for oi in rows {
                for k in 0..<pad {
                    zero.store(base + oi * row + k * 8)
                    zero.store(base + oi * row + right + k * 8)
                }
            }
            if rows.lowerBound == 0 { for k in 1...pad { (base - k * row).update(repeating: 0, count: (wo + 2 * pad) * 8) } }
            if rows.upperBound == ho { for k in 0..<pad { (base + (ho + k) * row).update(repeating: 0, count: (wo + 2 * pad) * 8) } }
        }
    }

    /// The epilogue over a whole output (paths that do not apply it row by row).
    func applyEpilogue(_ y: BlockedTensor) -> BlockedTensor {
        guard let f = activation else { return y }
        let t = y.data
        Parallel.chunks(t.count / 8, parts: t.count > 1 << 16 ? Parallel.threads : 1) { _, r in
            f.forward(t.pointer + r.lowerBound * 8, t.pointer + r.lowerBound * 8, count: r.count * 8)
        }
        return y
    }

    /// The epilogue over output rows `rows` of image `img`, every block or those of `blocks` (rows
    /// are contiguous: 8 floats a pixel).
    @inline(__always)
    func applyEpilogue(_ out: Output, img: Int, rows: Range<Int>, wo: Int, blocks: Range<Int>? = nil) {
        guard let f = activation, out.pixelStep == 8 else { return }
        for blk in blocks ?? 0..<outBlocks {
            for oi in rows {
                let p = out.origin + img * out.imageStride + blk * out.planeStride + oi * out.rowStride
                f.forward(p, p, count: wo * 8)
            }
        }
    }

    /// Where a convolution writes: pixel (0, 0) of output block 0 of image 0, and the strides in
    /// floats between pixels of a row (8 in a blocked tensor; 16 for every other pixel), rows,
    /// blocks of eight channels and images.
    struct Output {
        var origin: UnsafeMutablePointer<Float>
        var pixelStep: Int
        var rowStride: Int
        var planeStride: Int
        var imageStride: Int

        init(_ y: BlockedTensor) {
            origin = y.origin
            pixelStep = 8
            rowStride = y.rowStride
            planeStride = y.planeStride
            imageStride = y.imageStride
        }

        init(origin: UnsafeMutablePointer<Float>, pixelStep: Int, rowStride: Int, planeStride: Int, imageStride: Int) {
            self.origin = origin
            self.pixelStep = pixelStep
            self.rowStride = rowStride
            self.planeStride = planeStride
            self.imageStride = imageStride
        }
    }

    /// The convolution of `x` (padding `g.pads` read as zeros) into `out`, ho × wo pixels per image.
    /// `halo` > 0: `out` is a whole blocked tensor with that halo, zeroed here row by row.
    func run(_ x: Input, g: Window, ho: Int, wo: Int, into out: Output, residual: BlockedTensor?, relu: Bool, halo: Int = 0) {
        #if KDTOOL_AVX512
            if lanes == 16 {
                run(SIMD16<Float>.self, x, g: g, ho: ho, wo: wo, residual: residual, relu: relu, out: out, halo: halo)
                return
            }
        #endif
        run(SIMD8<Float>.self, x, g: g, ho: ho, wo: wo, residual: residual, relu: relu, out: out, halo: halo)
    }

    /// The convolution with `V.scalarCount` output channels per vector.
    func run<V: OutputLanes>(
        _: V.Type, _ x: Input, g: Window, ho: Int, wo: Int, residual: BlockedTensor?, relu: Bool, out output: Output, halo: Int
    ) {
        let (ib, cb, kh, kw, h, w) = (inBlock, inBlocks, kh, kw, x.h, x.w)
        let ob = (outBlocks * 8 + V.scalarCount - 1) / V.scalarCount  // output vectors
        // The last vector holds one block of eight (16 lanes, an odd number of blocks).
        let halfTail = outBlocks * 8 % V.scalarCount != 0
        let perBlock = cb * kh * kw * ib * V.scalarCount
        let tile = Tile<V>(
            planeStride: x.planeStride, pixelStep: g.stride.w * ib, tapH: g.dilation.h * x.rowStride, tapW: g.dilation.w * ib, ib: ib,
            cb: cb, kh: kh, kw: kw, weightBlock: perBlock, outBlock: output.planeStride, relu: relu, upper: upper,
            unitStride: ib == 8 && g.stride.w == 1, residualOffset: residual.map { $0.origin - output.origin },
            outPixel: output.pixelStep, straightLine: straightLineTiles)
        let wts = UnsafePointer(packed.pointer)
        let bias = UnsafePointer(bias.pointer)
        let (out, outPlane, outRow, outImage, outPixel) =
            (output.origin, output.planeStride, output.rowStride, output.imageStride, output.pixelStep)
        let shape = Self.shape(width: wo, blocks: ob, lanes: V.scalarCount)
        let tiles = (wo + shape.pixels - 1) / shape.pixels
        let groups = (ob + shape.blocks - 1) / shape.blocks
        // Per kernel column, the output columns whose tap lands inside the input: lo ≤ oj < hi.
        let columns: [(lo: Int, hi: Int)] = (0..<kw).map { kj in
            let off = kj * g.dilation.w - g.pads[1]
            let lo = max(0, (-off + g.stride.w - 1) / g.stride.w)
            let hi = min(wo, off >= w ? 0 : (w - 1 - off) / g.stride.w + 1)
            return (lo, max(lo, hi))
        }
        // Tiles as even as possible (28 = 6+6+6+5+5, 7 = 4+3), and whether each needs border passes.
        var spans: [(oj: Int, p: Int, inside: Bool)] = []
        var oj = 0
        for t in 0..<tiles {
            let p = wo / tiles + (t < wo % tiles ? 1 : 0)
            spans.append((oj, p, columns.allSatisfy { $0.lo <= oj && oj + p <= $0.hi }))
            oj += p
        }
        let blockGroups = (0..<groups).map { ob / groups + ($0 < ob % groups ? 1 : 0) }
        if ob == 1, !halfTail, V.scalarCount == 16, g.pads.allSatisfy({ $0 == 0 }), let rows = Self.rowTile(width: wo, height: ho) {
            var tile = tile
            tile.inRowStep = g.stride.h * x.rowStride
            tile.outRowStep = outRow
            tile.slide = sliding
            let spans = Self.split(wo, rows.pixels)
            let groupsPerImage = (ho + rows.rows - 1) / rows.rows
            Parallel.chunks(x.n * groupsPerImage) { _, range in
                for u in range {
                    let (img, t) = (u / groupsPerImage, u % groupsPerImage)
                    let oi = t * rows.rows
                    let count = min(rows.rows, ho - oi)
                    let rowIn = x.base + img * x.imageStride + oi * g.stride.h * x.rowStride
                    let taps = Tile<V>.Taps(rows: 0..<kh, columns: 0..<kw, first: true, last: true)
                    let d = out + img * outImage + oi * outRow
                    var oj = 0
                    for p in spans {
                        tile.dispatchRows(count, p, rowIn + oj * g.stride.w * ib, wts, bias, d + oj * outPixel, taps)
                        oj += p
                    }
                    applyEpilogue(output, img: img, rows: oi..<(oi + count), wo: wo)
                    clearHalo(output, img: img, rows: oi..<(oi + count), ho: ho, wo: wo, pad: halo)
                }
            }
            return
        }
        // Both tiles made here, once: setting `halfTail` on a copy made per row and group, just
        // before the call, had the call's own copy of the tile load the bytes just stored (a
        // failed store forwarding, 4 % of efficientnet-lite0's inference at batch 1 in that copy).
        var halfTile = tile
        halfTile.halfTail = true
        // The loops below read the tile lists through buffer pointers: iterating the arrays captured
        // by the closure retained and released them around every tile (10 % of a pointwise layer).
        spans.withUnsafeBufferPointer { spans in
            blockGroups.withUnsafeBufferPointer { blockGroups in
                /// Output row `oi` of image `img`, vector groups `range` (the first at vector `first`).
                @inline(__always)
                func row(_ img: Int, _ oi: Int, groups range: Range<Int>, first: Int) {
                    // Kernel rows that land inside the input for this output row.
                    let top = oi * g.stride.h - g.pads[0]
                    let kiLo = max(0, (-top + g.dilation.h - 1) / g.dilation.h)
                    let kiHi = min(kh, top >= h ? 0 : (h - 1 - top) / g.dilation.h + 1)
                    let rowIn = x.base + img * x.imageStride + top * x.rowStride
                    let taps = Tile<V>.Taps(rows: kiLo..<max(kiLo, kiHi), columns: 0..<kw, first: true, last: true)
                    var b = first
                    for nb in blockGroups[range] {
                        let d = out + img * outImage + (b * V.scalarCount / 8) * outPlane + oi * outRow
                        let half = halfTail && b + nb == ob
                        for span in spans {
                            let x = rowIn + (span.oj * g.stride.w - g.pads[1]) * ib
                            let (wb, bb, db) = (wts + b * perBlock, bias + b * V.scalarCount, d + span.oj * outPixel)
                            if span.inside {
                                if half {
                                    halfTile.dispatch(span.p, nb, x, wb, bb, db, taps)
                                } else {
                                    tile.dispatch(span.p, nb, x, wb, bb, db, taps)
                                }
                            } else {
                                (half ? halfTile : tile).border(span.p, nb, columns: columns, oj: span.oj, taps: taps, x, wb, bb, db)
                            }
                        }
                        b += nb
                    }
                }
                // One image whose weights outweigh its pixels (more output channels than pixels:
                // the expanding 1 × 1 layers of mobile networks on 8 × 8 maps): the workers split
                // the output channels, so each reads half of the weights rather than all of them.
                // Every output is computed as in the split by rows, bit for bit.
                if x.n == 1, Parallel.threads > 1, groups >= 2 * Parallel.threads, outChannels > ho * wo {
                    Parallel.chunks(groups) { _, range in
                        let first = blockGroups[..<range.lowerBound].reduce(0, +)
                        let end = first + blockGroups[range].reduce(0, +)
                        let blocks = (first * V.scalarCount / 8)..<min(outBlocks, end * V.scalarCount / 8)
                        for oi in 0..<ho { row(0, oi, groups: range, first: first) }
                        applyEpilogue(output, img: 0, rows: 0..<ho, wo: wo, blocks: blocks)
                        clearHalo(output, img: 0, rows: 0..<ho, ho: ho, wo: wo, pad: halo, blocks: blocks)
                    }
                    return
                }
                Parallel.chunks(x.n * ho) { _, range in
                    for u in range {
                        let (img, oi) = (u / ho, u % ho)
                        row(img, oi, groups: 0..<groups, first: 0)
                        applyEpilogue(output, img: img, rows: oi..<(oi + 1), wo: wo)
                        clearHalo(output, img: img, rows: oi..<(oi + 1), ho: ho, wo: wo, pad: halo)
                    }
                }
            }
        }
    }

    /// Strides of one convolution's input, packed weights and output, in floats; `V` holds one
    /// pixel's output channels of one tile block (one or two blocks of eight).
    struct Tile<V: OutputLanes> {
        let planeStride: Int
        let pixelStep: Int
        let tapH: Int
        let tapW: Int
        let ib: Int
        let cb: Int
        let kh: Int
        let kw: Int
        /// Packed weights of one output vector.
        let weightBlock: Int
        /// Floats from one output block of eight channels to the next (its plane with the halo).
        let outBlock: Int
        let relu: Bool
        /// With `relu`: the ceiling of a clip to [0, upper] (ReLU6), infinity for a plain ReLU.
        let upper: Float
        let unitStride: Bool
        /// Distance from the output to the residual added before the ReLU, when there is one.
        let residualOffset: Int?
        /// Floats from one output row's input to the next's, and from one output row to the next
        /// (tiles of several rows).
        var inRowStep = 0
        var outRowStep = 0
        /// Floats from one output pixel of a row to the next.
        var outPixel = 8
        /// Whether multi-row tiles over NCHW input take the sliding kernel (`DirectConv.sliding`).
        var slide = false
        /// Whether the tile's last vector holds one block of eight: it loads and stores its low half.
        var halfTail = false
        /// Whether unit-stride tiles run the straight-line code (`DirectConv.straightLineTiles`).
        var straightLine = true

        /// Output vector `b` of `nb` at `p` (its low half when it is the half tail).
        @inline(__always)
        func loadOut(_ p: UnsafeMutablePointer<Float>, _ b: Int, _ nb: Int) -> V {
            halfTail && b == nb - 1 ? V.loadLow(UnsafePointer(p)) : V.load(p, blockStride: outBlock)
        }

        @inline(__always)
        func storeOut(_ v: V, _ p: UnsafeMutablePointer<Float>, _ b: Int, _ nb: Int) {
            if halfTail && b == nb - 1 { v.storeLow(p) } else { v.store(p, blockStride: outBlock) }
        }

        /// Accumulator `acc` of output vector `b` of `nb` stored at `o`; after a tile's `last` taps
        /// with the residual added and the ReLU (or clip from 0) applied.
        @inline(__always)
        func finish(_ acc: V, _ o: UnsafeMutablePointer<Float>, _ b: Int, _ nb: Int, last: Bool) {
            var v = acc
            if last {
                if let residualOffset { v += loadOut(o + residualOffset, b, nb) }
                if relu { v = upper < .infinity ? v.relu(upTo: upper) : v.relu() }
            }
            storeOut(v, o, b, nb)
        }

        /// The kernel rows and columns one pass accumulates; a pixel at the input's border takes
        /// its taps in several passes, the first starting from the bias and the last finishing.
        struct Taps {
            var rows: Range<Int>
            var columns: Range<Int>
            var first: Bool
            var last: Bool
        }

        /// Output pixels oj..<oj+p at the input's left or right border: the bias is stored first
        /// and each run of kernel columns with the same valid pixels is a pass over just those
        /// pixels (reading no padding at all), then a last pass adds the residual and applies ReLU.
        func border(
            _ p: Int, _ nb: Int, columns: [(lo: Int, hi: Int)], oj: Int, taps: Taps, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
            _ bias: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>
        ) {
            for b in 0..<nb {
                for q in 0..<p { storeOut(V.load(bias + b * V.scalarCount), d + b * vectorStride + q * outPixel, b, nb) }
            }
            var kj = 0
            while kj < kw {
                let (lo, hi) = (max(oj, columns[kj].lo), min(oj + p, columns[kj].hi))
                var end = kj + 1
                while end < kw && max(oj, columns[end].lo) == lo && min(oj + p, columns[end].hi) == hi { end += 1 }
                if lo < hi {
                    let pass = Taps(rows: taps.rows, columns: kj..<end, first: false, last: false)
                    dispatch(hi - lo, nb, x + (lo - oj) * pixelStep, w, bias, d + (lo - oj) * outPixel, pass)
                }
                kj = end
            }
            if residualOffset != nil || relu { dispatch(p, nb, x, w, bias, d, Taps(rows: 0..<0, columns: 0..<0, first: false, last: true)) }
        }

        @inline(__always)
        func dispatch(
            _ p: Int, _ nb: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
            _ d: UnsafeMutablePointer<Float>, _ taps: Taps
        ) {
            if unitStride {
                // Straight-line tiles from registers (DirectConv+Tiles.generated.swift), the generic one otherwise.
                if !straightLine || !blocked(p, nb, x, w, bias, d, taps) { dispatch(Stride1Blocked.self, p, nb, x, w, bias, d, taps) }
            } else if pixelStep == 1 {
                dispatch(Stride1Plain.self, p, nb, x, w, bias, d, taps)
            } else if pixelStep == 16 && ib == 8 {
                dispatch(Stride2Blocked.self, p, nb, x, w, bias, d, taps)
            } else {
                dispatch(AnyInput.self, p, nb, x, w, bias, d, taps)
            }
        }

        @inline(__always)
        func dispatch<L: TileInput>(
            _: L.Type, _ p: Int, _ nb: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
            _ d: UnsafeMutablePointer<Float>, _ taps: Taps
        ) {
            switch (p, nb) {
            case (1, 1): run(Px1.self, Blocks1.self, L.self, Px1.self, InlineArray<1, V>.self, x, w, bias, d, taps)
            case (2, 1): run(Px2.self, Blocks1.self, L.self, Px1.self, InlineArray<2, V>.self, x, w, bias, d, taps)
            case (3, 1): run(Px3.self, Blocks1.self, L.self, Px1.self, InlineArray<3, V>.self, x, w, bias, d, taps)
            case (4, 1): run(Px4.self, Blocks1.self, L.self, Px1.self, InlineArray<4, V>.self, x, w, bias, d, taps)
            case (5, 1): run(Px5.self, Blocks1.self, L.self, Px1.self, InlineArray<5, V>.self, x, w, bias, d, taps)
            case (6, 1): run(Px6.self, Blocks1.self, L.self, Px1.self, InlineArray<6, V>.self, x, w, bias, d, taps)
            case (1, 2): run(Px1.self, Blocks2.self, L.self, Px1.self, InlineArray<2, V>.self, x, w, bias, d, taps)
            case (2, 2): run(Px2.self, Blocks2.self, L.self, Px1.self, InlineArray<4, V>.self, x, w, bias, d, taps)
            case (3, 2): run(Px3.self, Blocks2.self, L.self, Px1.self, InlineArray<6, V>.self, x, w, bias, d, taps)
            case (4, 2): run(Px4.self, Blocks2.self, L.self, Px1.self, InlineArray<8, V>.self, x, w, bias, d, taps)
            case (5, 2): run(Px5.self, Blocks2.self, L.self, Px1.self, InlineArray<10, V>.self, x, w, bias, d, taps)
            case (6, 2): run(Px6.self, Blocks2.self, L.self, Px1.self, InlineArray<12, V>.self, x, w, bias, d, taps)
            case (1, 3): run(Px1.self, Blocks3.self, L.self, Px1.self, InlineArray<3, V>.self, x, w, bias, d, taps)
            case (2, 3): run(Px2.self, Blocks3.self, L.self, Px1.self, InlineArray<6, V>.self, x, w, bias, d, taps)
            case (3, 3): run(Px3.self, Blocks3.self, L.self, Px1.self, InlineArray<9, V>.self, x, w, bias, d, taps)
            case (4, 3): run(Px4.self, Blocks3.self, L.self, Px1.self, InlineArray<12, V>.self, x, w, bias, d, taps)
            case (5, 3): run(Px5.self, Blocks3.self, L.self, Px1.self, InlineArray<15, V>.self, x, w, bias, d, taps)
            case (6, 3): run(Px6.self, Blocks3.self, L.self, Px1.self, InlineArray<18, V>.self, x, w, bias, d, taps)
            case (7, 3): run(Px7.self, Blocks3.self, L.self, Px1.self, InlineArray<21, V>.self, x, w, bias, d, taps)
            case (8, 3): run(Px8.self, Blocks3.self, L.self, Px1.self, InlineArray<24, V>.self, x, w, bias, d, taps)
            case (1, 4): run(Px1.self, Blocks4.self, L.self, Px1.self, InlineArray<4, V>.self, x, w, bias, d, taps)
            case (2, 4): run(Px2.self, Blocks4.self, L.self, Px1.self, InlineArray<8, V>.self, x, w, bias, d, taps)
            case (3, 4): run(Px3.self, Blocks4.self, L.self, Px1.self, InlineArray<12, V>.self, x, w, bias, d, taps)
            case (7, 1): run(Px7.self, Blocks1.self, L.self, Px1.self, InlineArray<7, V>.self, x, w, bias, d, taps)
            case (8, 1): run(Px8.self, Blocks1.self, L.self, Px1.self, InlineArray<8, V>.self, x, w, bias, d, taps)
            case (9, 1): run(Px9.self, Blocks1.self, L.self, Px1.self, InlineArray<9, V>.self, x, w, bias, d, taps)
            case (10, 1): run(Px10.self, Blocks1.self, L.self, Px1.self, InlineArray<10, V>.self, x, w, bias, d, taps)
            case (11, 1): run(Px11.self, Blocks1.self, L.self, Px1.self, InlineArray<11, V>.self, x, w, bias, d, taps)
            case (12, 1): run(Px12.self, Blocks1.self, L.self, Px1.self, InlineArray<12, V>.self, x, w, bias, d, taps)
            case (13, 1): run(Px13.self, Blocks1.self, L.self, Px1.self, InlineArray<13, V>.self, x, w, bias, d, taps)
            case (14, 1): run(Px14.self, Blocks1.self, L.self, Px1.self, InlineArray<14, V>.self, x, w, bias, d, taps)
            case (7, 2): run(Px7.self, Blocks2.self, L.self, Px1.self, InlineArray<14, V>.self, x, w, bias, d, taps)
            case (8, 2): run(Px8.self, Blocks2.self, L.self, Px1.self, InlineArray<16, V>.self, x, w, bias, d, taps)
            case (9, 2): run(Px9.self, Blocks2.self, L.self, Px1.self, InlineArray<18, V>.self, x, w, bias, d, taps)
            case (10, 2): run(Px10.self, Blocks2.self, L.self, Px1.self, InlineArray<20, V>.self, x, w, bias, d, taps)
            case (11, 2): run(Px11.self, Blocks2.self, L.self, Px1.self, InlineArray<22, V>.self, x, w, bias, d, taps)
            case (12, 2): run(Px12.self, Blocks2.self, L.self, Px1.self, InlineArray<24, V>.self, x, w, bias, d, taps)
            default: preconditionFailure("no \(p)×\(nb) tile")
            }
        }

        /// `P.count` output pixels × `B.count` output blocks. Generic over the tile shape so that the
        /// optimizer specialises each case into its own loop with the accumulators in registers
        /// (with the sizes as runtime values they spill and every FMA sits behind a branch).
        /// `R.count` rows of `P.count` output pixels × `B.count` output blocks (several rows only
        /// with one block: a layer of 16 outputs gets 21–28 accumulators instead of at most 14).
        /// The accumulators are an array of exactly the tile's size (an array of 24 made zero for
        /// every tile was a 1.5 KB memset per tile: 4 % of a training step).
        func run<P: TilePixels, B: TileBlocks, L: TileInput, R: TilePixels, let N: Int>(
            _: P.Type, _: B.Type, _: L.Type, _: R.Type, _: InlineArray<N, V>.Type, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
            _ bias: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ taps: Taps
        ) {
            let (np, nb, nr) = (P.count, B.count, R.count)
            let ib = L.inBlock ?? self.ib
            let s = L.pixelStep ?? pixelStep
            let (inRow, outRow, outPix) = (inRowStep, outRowStep, outPixel)
            let lanes = V.scalarCount
            var acc = InlineArray<N, V>(repeating: V())
            for b in 0..<nb {
                for r in 0..<nr {
                    for q in 0..<np {
                        acc[(b * nr + r) * np + q] =
                            taps.first
                            ? V.load(bias + b * lanes)
                            : loadOut(d + b * vectorStride + r * outRow + q * outPix, b, nb)
                    }
                }
            }
            // Wrapping arithmetic: the offsets were checked when the geometry was built, and an
            // overflow trap per tap costs more than the tap's index arithmetic itself.
            // One loop over all taps (input block, kernel row, kernel column) rather than three
            // nested ones: across nested loops the compiler keeps the accumulators in memory and
            // stores and reloads them after every tap (measured: a third of the kernel's time).
            // The pointers come from the counters, not from `TapSteps` as in the straight-line
            // tiles: with the steps' state beside these accumulators the multi-row tiles slowed
            // (mobilenetv2's stem at batch 64: 1.0 → 2.4 ms, AVX-512 build).
            let (rows, columns) = (taps.rows, taps.columns)
            let count = cb &* rows.count &* columns.count
            var (c, ki, kj) = (0, rows.lowerBound, columns.lowerBound)
            for _ in 0..<count {
                let px = x + (c &* planeStride &+ ki &* tapH &+ kj &* tapW)
                let wq = w + (((c &* kh &+ ki) &* kw &+ kj) &* ib &* lanes)
                // Whichever operand is fewer stays live across the lane: the accumulators plus
                // min(pixels, blocks) + 1 operands fit the vector registers.
                for i in 0..<ib {
                    if nb == 1 {
                        let w0 = V.load(wq + i &* lanes)
                        for r in 0..<nr {
                            let row = px + r &* inRow
                            for q in 0..<np { acc[r * np + q].addProduct(V(repeating: row[i &+ q &* s]), w0) }
                        }
                    } else if nb <= np {
                        var wv = InlineArray<4, V>(repeating: V())
                        for b in 0..<nb { wv[b] = V.load(wq + (b &* weightBlock &+ i &* lanes)) }
                        for q in 0..<np {
                            let v = V(repeating: px[i &+ q &* s])
                            for b in 0..<nb { acc[b * np + q].addProduct(v, wv[b]) }
                        }
                    } else {
                        var xv = InlineArray<6, V>(repeating: V())
                        for q in 0..<np { xv[q] = V(repeating: px[i &+ q &* s]) }
                        for b in 0..<nb {
                            let v = V.load(wq + (b &* weightBlock &+ i &* lanes))
                            for q in 0..<np { acc[b * np + q].addProduct(xv[q], v) }
                        }
                    }
                }
                kj &+= 1
                if kj == columns.upperBound {
                    kj = columns.lowerBound
                    ki &+= 1
                    if ki == rows.upperBound {
                        ki = rows.lowerBound
                        c &+= 1
                    }
                }
            }
            for b in 0..<nb {
                for r in 0..<nr {
                    for q in 0..<np {
                        finish(acc[(b * nr + r) * np + q], d + b * vectorStride + r * outRow + q * outPix, b, nb, last: taps.last)
                    }
                }
            }
        }

        /// A tile of `rows` rows × `p` pixels × one output vector, interior (every tap inside the input).
        @inline(__always)
        func dispatchRows<L: TileInput>(
            _: L.Type, _ rows: Int, _ p: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
            _ d: UnsafeMutablePointer<Float>, _ taps: Taps
        ) {
            switch (rows, p) {
            case (2, 5): run(Px5.self, Blocks1.self, L.self, Px2.self, InlineArray<10, V>.self, x, w, bias, d, taps)
            case (2, 6): run(Px6.self, Blocks1.self, L.self, Px2.self, InlineArray<12, V>.self, x, w, bias, d, taps)
            case (2, 7): run(Px7.self, Blocks1.self, L.self, Px2.self, InlineArray<14, V>.self, x, w, bias, d, taps)
            case (2, 8): run(Px8.self, Blocks1.self, L.self, Px2.self, InlineArray<16, V>.self, x, w, bias, d, taps)
            case (2, 9): run(Px9.self, Blocks1.self, L.self, Px2.self, InlineArray<18, V>.self, x, w, bias, d, taps)
            case (2, 10): run(Px10.self, Blocks1.self, L.self, Px2.self, InlineArray<20, V>.self, x, w, bias, d, taps)
            case (2, 11): run(Px11.self, Blocks1.self, L.self, Px2.self, InlineArray<22, V>.self, x, w, bias, d, taps)
            case (2, 12): run(Px12.self, Blocks1.self, L.self, Px2.self, InlineArray<24, V>.self, x, w, bias, d, taps)
            case (3, 5): run(Px5.self, Blocks1.self, L.self, Px3.self, InlineArray<15, V>.self, x, w, bias, d, taps)
            case (3, 6): run(Px6.self, Blocks1.self, L.self, Px3.self, InlineArray<18, V>.self, x, w, bias, d, taps)
            case (3, 7): run(Px7.self, Blocks1.self, L.self, Px3.self, InlineArray<21, V>.self, x, w, bias, d, taps)
            case (3, 8): run(Px8.self, Blocks1.self, L.self, Px3.self, InlineArray<24, V>.self, x, w, bias, d, taps)
            case (2, 13): run(Px13.self, Blocks1.self, L.self, Px2.self, InlineArray<26, V>.self, x, w, bias, d, taps)
            case (2, 14): run(Px14.self, Blocks1.self, L.self, Px2.self, InlineArray<28, V>.self, x, w, bias, d, taps)
            default: dispatch(L.self, p, 1, x, w, bias, d, taps)
            }
        }

        @inline(__always)
        func dispatchRows(
            _ rows: Int, _ p: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
            _ d: UnsafeMutablePointer<Float>, _ taps: Taps
        ) {
            if rows == 1 {
                dispatch(p, 1, x, w, bias, d, taps)
            } else if unitStride {
                dispatchRows(Stride1Blocked.self, rows, p, x, w, bias, d, taps)
            } else if pixelStep == 16 && ib == 8 {
                dispatchRows(Stride2Blocked.self, rows, p, x, w, bias, d, taps)
            } else if pixelStep == 1 {
                if !slide || !dispatchSliding(rows, p, x, w, bias, d) { dispatchRows(Stride1Plain.self, rows, p, x, w, bias, d, taps) }
            } else {
                dispatchRows(AnyInput.self, rows, p, x, w, bias, d, taps)
            }
        }

        /// Output floats from one tile vector's first block to the next vector's.
        var vectorStride: Int { outBlock * V.scalarCount / 8 }
    }
}

/// How a straight-line tile's input and weight pointers move from one tap to the next, the taps
/// taken input block by input block, kernel row by kernel row, kernel column by kernel column:
/// additions only. Recomputing both pointers from the three counters with multiplications at
/// every tap (as `Tile.run` does) held the AVX2 build's 4 × 3 tile to 65 GFLOP/s on one core
/// (232 → 232 channels on 4 × 4 maps); with these steps it runs at 79, the same bits.
struct TapSteps {
    /// Offsets of the first tap from the tile's input and weights.
    let input: Int
    let weight: Int
    let rows: Range<Int>
    let columns: Range<Int>
    /// Added at every tap.
    let tapW: Int
    let tap: Int
    /// Added as well where a kernel row ends, and where an input block ends.
    let rowInput: Int
    let rowWeight: Int
    let blockInput: Int
    let blockWeight: Int

    /// `tap`: the weights of one tap (an input block's lanes × the output vector's lanes).
    @inline(__always)
    init(rows: Range<Int>, columns: Range<Int>, planeStride: Int, tapH: Int, tapW: Int, kh: Int, kw: Int, tap: Int) {
        (self.rows, self.columns, self.tapW, self.tap) = (rows, columns, tapW, tap)
        input = rows.lowerBound &* tapH &+ columns.lowerBound &* tapW
        weight = (rows.lowerBound &* kw &+ columns.lowerBound) &* tap
        rowInput = tapH &- columns.count &* tapW
        rowWeight = (kw &- columns.count) &* tap
        blockInput = planeStride &- rows.count &* tapH
        blockWeight = (kh &- rows.count) &* kw &* tap
    }

    /// The next tap: kernel column `kj`, row `ki` and the pointers to its input and weights.
    @inline(__always)
    func advance(_ ki: inout Int, _ kj: inout Int, _ px: inout UnsafePointer<Float>, _ wq: inout UnsafePointer<Float>) {
        kj &+= 1
        px += tapW
        wq += tap
        if kj == columns.upperBound {
            kj = columns.lowerBound
            ki &+= 1
            px += rowInput
            wq += rowWeight
            if ki == rows.upperBound {
                ki = rows.lowerBound
                px += blockInput
                wq += blockWeight
            }
        }
    }
}

/// One pixel's output channels as the tile accumulates them: 8 lanes (one output block) or 16
/// (two consecutive blocks, which lie `blockStride` floats apart in the NCHW8c output).
protocol OutputLanes: SIMD where Scalar == Float {
    /// `scalarCount` contiguous floats.
    static func load(_ p: UnsafePointer<Float>) -> Self
    /// The pixel's channels from blocked activations.
    static func load(_ p: UnsafeMutablePointer<Float>, blockStride: Int) -> Self
    func store(_ p: UnsafeMutablePointer<Float>, blockStride: Int)
    /// `scalarCount` contiguous floats.
    func storeContiguous(_ p: UnsafeMutablePointer<Float>)
    /// One block of eight floats at `p` into the low lanes, the others zero.
    static func loadLow(_ p: UnsafePointer<Float>) -> Self
    /// The low eight lanes to `p`.
    func storeLow(_ p: UnsafeMutablePointer<Float>)
    /// max(x, 0), NaN kept. A requirement, not the generic `replacing(with:where:)`, which in
    /// code generic over the vector type compiles to a loop over the lanes.
    func relu() -> Self
    /// min(max(x, 0), upper): ReLU6 and other clips from 0.
    func relu(upTo upper: Float) -> Self
}

extension SIMD8: OutputLanes where Scalar == Float {
    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>, blockStride: Int) -> SIMD8<Float> { load(p) }
    @inline(__always)
    func store(_ p: UnsafeMutablePointer<Float>, blockStride: Int) { store(p) }
    @inline(__always)
    func storeContiguous(_ p: UnsafeMutablePointer<Float>) { store(p) }
    @inline(__always)
    static func loadLow(_ p: UnsafePointer<Float>) -> SIMD8<Float> { load(p) }
    @inline(__always)
    func storeLow(_ p: UnsafeMutablePointer<Float>) { store(p) }
    @inline(__always)
    func relu() -> SIMD8<Float> { replacing(with: 0, where: self .< 0) }
    @inline(__always)
    func relu(upTo upper: Float) -> SIMD8<Float> {
        let v = replacing(with: 0, where: self .< 0)
        return v.replacing(with: upper, where: v .> upper)
    }
}

extension SIMD16: OutputLanes where Scalar == Float {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    // The halves by bit casts, not `lowHalf`/`highHalf`: those are loops over the lanes until
    // LLVM folds them, and in a large tile (DirectConv+Tiles.generated.swift) the SIL inliner
    // stopped inlining them, calling a getter per half with the vector passed through the stack.
    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>, blockStride: Int) -> SIMD16<Float> {
        unsafeBitCast((SIMD8.load(p), SIMD8.load(p + blockStride)), to: SIMD16<Float>.self)
    }
    @inline(__always)
    func store(_ p: UnsafeMutablePointer<Float>, blockStride: Int) {
        let halves = unsafeBitCast(self, to: (SIMD8<Float>, SIMD8<Float>).self)
        halves.0.store(p)
        halves.1.store(p + blockStride)
    }
    @inline(__always)
    func storeContiguous(_ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: self, as: SIMD16<Float>.self) }
    @inline(__always)
    static func loadLow(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        unsafeBitCast((SIMD8.load(p), SIMD8<Float>()), to: SIMD16<Float>.self)
    }
    @inline(__always)
    func storeLow(_ p: UnsafeMutablePointer<Float>) { unsafeBitCast(self, to: (SIMD8<Float>, SIMD8<Float>).self).0.store(p) }
    @inline(__always)
    func relu() -> SIMD16<Float> { replacing(with: 0, where: self .< 0) }
    @inline(__always)
    func relu(upTo upper: Float) -> SIMD16<Float> {
        let v = replacing(with: 0, where: self .< 0)
        return v.replacing(with: upper, where: v .> upper)
    }
}

protocol TilePixels { static var count: Int { get } }
enum Px1: TilePixels { static var count: Int { 1 } }
enum Px2: TilePixels { static var count: Int { 2 } }
enum Px3: TilePixels { static var count: Int { 3 } }
enum Px4: TilePixels { static var count: Int { 4 } }
enum Px5: TilePixels { static var count: Int { 5 } }
enum Px6: TilePixels { static var count: Int { 6 } }
enum Px7: TilePixels { static var count: Int { 7 } }
enum Px8: TilePixels { static var count: Int { 8 } }
enum Px9: TilePixels { static var count: Int { 9 } }
enum Px10: TilePixels { static var count: Int { 10 } }
enum Px11: TilePixels { static var count: Int { 11 } }
enum Px12: TilePixels { static var count: Int { 12 } }
enum Px13: TilePixels { static var count: Int { 13 } }
enum Px14: TilePixels { static var count: Int { 14 } }
protocol TileBlocks { static var count: Int { get } }
enum Blocks1: TileBlocks { static var count: Int { 1 } }
enum Blocks2: TileBlocks { static var count: Int { 2 } }
enum Blocks3: TileBlocks { static var count: Int { 3 } }
enum Blocks4: TileBlocks { static var count: Int { 4 } }

/// What a tile knows about its input at compile time: blocked input read at stride 1 (the
/// common case: the eight lanes of a tap and the pixels sit at constant offsets) or 2 (a
/// ResNet stage's first convolution and its shortcut), NCHW input
/// read at stride 1 (a network's first convolution: one lane per tap, no lane loop), or
/// anything else (sizes read at run time).
protocol TileInput {
    static var inBlock: Int? { get }
    static var pixelStep: Int? { get }
}
enum Stride1Blocked: TileInput {
    static var inBlock: Int? { 8 }
    static var pixelStep: Int? { 8 }
}
enum Stride2Blocked: TileInput {
    static var inBlock: Int? { 8 }
    static var pixelStep: Int? { 16 }
}
enum Stride1Plain: TileInput {
    static var inBlock: Int? { 1 }
    static var pixelStep: Int? { 1 }
}
enum AnyInput: TileInput {
    static var inBlock: Int? { nil }
    static var pixelStep: Int? { nil }
}
