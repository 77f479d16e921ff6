/// Gradients of a dense convolution on channel-blocked activations, for training's backward pass:
/// dW by a direct kernel (no column matrix, no GEMM), dX as convolutions of dY on the direct
/// forward kernel (stride 1: dY with the flipped weights; stride 2: one small convolution per
/// output phase, written to every other pixel), db as a sum over dY.
///
/// Per-thread partial sums over images are added in thread order, so results depend on the thread
/// count only, as everywhere in KDTensor.
public enum BlockedConvGradient {
    /// Whether the blocked gradients handle this convolution (dense, no dilation, kernel widths
    /// the weight kernel has tiles for).
    public static func applies(_ g: Window, groups: Int) -> Bool {
        groups == 1 && g.dilation == (1, 1) && [1, 2, 3, 5].contains(g.kernel.w)
    }

    // MARK: dW, blocked input

    /// dW `[O, C, kh, kw]` of a convolution whose input was `x` and whose output gradient is `dy`.
    ///
    /// A tile accumulates, in registers, dW for T output channels × kw kernel columns of one kernel
    /// row × up to three vectors of 16 (or 8) input channels: per output pixel it loads the input
    /// vectors under the kernel row and broadcasts T values of dY (the tiles are generated,
    /// `ConvGradients+Tiles.generated.swift`). With 16-lane vectors and an odd number of input
    /// blocks, the last block takes 8-lane tiles.
    public static func weight(x: BlockedTensor, dy: BlockedTensor, window g: Window) -> Tensor {
        let (kh, kw) = g.kernel
        let x = x.pad >= (g.pads.max() ?? 0) ? x : x.withPad(g.pads.max() ?? 0)
        #if KDTOOL_AVX512
            if x.blocks >= 2 { return weight(lanes: 16, x: x, dy: dy, g, kh: kh, kw: kw) }
        #endif
        return weight(lanes: 8, x: x, dy: dy, g, kh: kh, kw: kw)
    }

    /// Vector registers the tiles may fill.
    static var registers: Int {
        #if KDTOOL_AVX512
            32
        #else
            16
        #endif
    }

    static func weight(lanes: Int, x: BlockedTensor, dy: BlockedTensor, _ g: Window, kh: Int, kw: Int) -> Tensor {
        let (n, ho, wo) = (dy.n, dy.h, dy.w)
        let (o, c) = (dy.channels, x.channels)
        let outPadded = dy.blocks * 8
        // Whole vectors of input channels, and a last block of 8 when `lanes` is 16 and the blocks odd.
        let whole = x.blocks * 8 / lanes
        let tail = x.blocks * 8 % lanes != 0
        let cvs = whole + (tail ? 1 : 0)
        guard let shape = WeightTile.shape(kernelWidth: kw, registers: registers) else {
            preconditionFailure("no weight-gradient tiles for kernels \(kw) wide")
        }
        let tileO = shape.outputs
        // Per part: [cv][ki][o][kj][lanes].
        let sumStride = kh * outPadded * kw * lanes
        let partSize = cvs * sumStride
        let parts = max(1, min(Parallel.threads, n))
        let partial = Tensor(zeros: [parts * partSize])
        let geometry = WeightTile(
            xRow: x.rowStride, xPlane: x.planeStride, stride: g.stride.w * 8, rowStep: g.stride.h * x.rowStride, dyRow: dy.rowStride,
            dyPlane: dy.planeStride, ho: ho, wo: wo, kw: kw)
        let vectorStride = (lanes / 8) * x.planeStride
        // Pixel (0, 0) of the padded input under the kernel's top-left tap.
        let xBase = UnsafePointer(x.origin - (g.pads[0] * x.rowStride + g.pads[1] * 8))
        let dyBase = UnsafePointer(dy.origin)
        let acc = partial.pointer
        Parallel.chunks(n, parts: parts) { part, images in
            let mine = acc + part * partSize
            for img in images {
                for ki in 0..<kh {
                    let xi = xBase + img * x.imageStride + ki * x.rowStride
                    for o0 in stride(from: 0, to: outPadded, by: tileO) {
                        let d = dyBase + img * dy.imageStride + (o0 / 8) * dy.planeStride + o0 % 8
                        let sums = mine + ((ki * outPadded + o0) * kw) * lanes
                        var cv = 0
                        while cv < whole {
                            let nv = min(shape.vectors, whole - cv)
                            geometry.tile(
                                lanes: lanes, vectors: nv, outputs: tileO, xi + cv * vectorStride, d, sums + cv * sumStride,
                                vectorStride: vectorStride, sumStride: sumStride, slot: lanes)
                            cv += nv
                        }
                        if tail {
                            geometry.tile(
                                lanes: 8, vectors: 1, outputs: tileO, xi + whole * vectorStride, d, sums + whole * sumStride,
                                vectorStride: 0, sumStride: sumStride, slot: lanes)
                        }
                    }
                }
            }
        }
        let dw = Tensor(uninitialized: [o, c, kh, kw])
        let p = partial.pointer
        for part in 1..<parts { for i in 0..<partSize { p[i] += p[part * partSize + i] } }
        for oc in 0..<o {
            for ic in 0..<c {
                let (cv, lane) = (ic / lanes, ic % lanes)
                for ki in 0..<kh {
                    for kj in 0..<kw {
                        dw[((oc * c + ic) * kh + ki) * kw + kj] = p[(((cv * kh + ki) * outPadded + oc) * kw + kj) * lanes + lane]
                    }
                }
            }
        }
        return dw
    }

    /// Strides of one weight-gradient tile, in floats.
    struct WeightTile {
        let xRow: Int
        let xPlane: Int
        /// Input floats from one output pixel to the next (8 · stride).
        let stride: Int
        /// Input floats from one output row to the next.
        let rowStep: Int
        let dyRow: Int
        let dyPlane: Int
        let ho: Int
        let wo: Int
        let kw: Int
    }

    // MARK: dW, NCHW input

    /// dW `[O, C, kh, kw]` of a convolution of an NCHW input with a few channels (a network's first
    /// layer). Here the vectors run over output channels: a tile holds up to 24 (kernel row,
    /// kernel column) taps of one input channel, and each output pixel loads one dY vector and
    /// broadcasts one input value per tap.
    public static func weight(plain x: Tensor, dy: BlockedTensor, window g: Window) -> Tensor {
        #if KDTOOL_AVX512
            if dy.blocks % 2 == 0 { return weightPlain(SIMD16<Float>.self, x: x, dy: dy, g) }
        #endif
        return weightPlain(SIMD8<Float>.self, x: x, dy: dy, g)
    }

    static func weightPlain<V: OutputLanes>(_: V.Type, x: Tensor, dy: BlockedTensor, _ g: Window) -> Tensor {
        let lanes = V.scalarCount
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = g.kernel
        let (ho, wo, o) = (dy.h, dy.w, dy.channels)
        let p = g.pads
        // A zero-padded copy: every tap of every output pixel inside it.
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3])
        let padded = Tensor(zeros: [n * c * hp * wp])
        for u in 0..<(n * c) {
            for i in 0..<h { (padded.pointer + (u * hp + i + p[0]) * wp + p[1]).update(from: x.pointer + (u * h + i) * w, count: w) }
        }
        let vectors = dy.blocks * 8 / lanes
        // Row groups of the kernel, at most 24 taps each (5 × 5 as 3 + 2 rows).
        let rowsPerTile = max(1, min(kh, 24 / kw))
        let groups = DirectConv.split(kh, rowsPerTile)
        // Per part: [vector][c][ki][kj][lanes].
        let partSize = vectors * c * kh * kw * lanes
        let parts = max(1, min(Parallel.threads, n))
        let partial = Tensor(zeros: [parts * partSize])
        let geometry = PlainWeightTile(
            xRow: wp, rowStep: g.stride.h * wp, stride: g.stride.w, dyRow: dy.rowStride, dyPlane: dy.planeStride, ho: ho, wo: wo, kw: kw)
        let (xs, dys, acc) = (UnsafePointer(padded.pointer), UnsafePointer(dy.origin), partial.pointer)
        Parallel.chunks(n, parts: parts) { part, images in
            let mine = acc + part * partSize
            for img in images {
                for v in 0..<vectors {
                    let d = dys + img * dy.imageStride + v * (lanes / 8) * dy.planeStride
                    for ic in 0..<c {
                        var ki = 0
                        for rows in groups {
                            let sums = mine + (((v * c + ic) * kh + ki) * kw) * lanes
                            geometry.dispatch(V.self, rows, xs + ((img * c + ic) * hp + ki) * wp, d, sums)
                            ki += rows
                        }
                    }
                }
            }
        }
        let dw = Tensor(uninitialized: [o, c, kh, kw])
        let pp = partial.pointer
        for part in 1..<parts { for i in 0..<partSize { pp[i] += pp[part * partSize + i] } }
        for oc in 0..<o {
            let (v, lane) = (oc / lanes, oc % lanes)
            for ic in 0..<c {
                for k in 0..<(kh * kw) { dw[(oc * c + ic) * kh * kw + k] = pp[(((v * c + ic) * kh * kw) + k) * lanes + lane] }
            }
        }
        return dw
    }

    struct PlainWeightTile {
        let xRow: Int
        let rowStep: Int
        let stride: Int
        let dyRow: Int
        let dyPlane: Int
        let ho: Int
        let wo: Int
        let kw: Int

        @inline(__always)
        func dispatch<V: OutputLanes>(
            _: V.Type, _ rows: Int, _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ sums: UnsafeMutablePointer<Float>
        ) {
            switch (rows, kw) {
            case (3, 3): run(V.self, Px3.self, Px3.self, x, dy, sums)
            case (1, 3): run(V.self, Px1.self, Px3.self, x, dy, sums)
            case (2, 3): run(V.self, Px2.self, Px3.self, x, dy, sums)
            case (1, 1): run(V.self, Px1.self, Px1.self, x, dy, sums)
            case (3, 5): run(V.self, Px3.self, Px5.self, x, dy, sums)
            case (2, 5): run(V.self, Px2.self, Px5.self, x, dy, sums)
            case (1, 5): run(V.self, Px1.self, Px5.self, x, dy, sums)
            case (1, 2): run(V.self, Px1.self, Px2.self, x, dy, sums)
            case (2, 2): run(V.self, Px2.self, Px2.self, x, dy, sums)
            default: preconditionFailure("no weight-gradient tile for \(rows) × \(kw) taps")
            }
        }

        func run<V: OutputLanes, R: TilePixels, K: TilePixels>(
            _: V.Type, _: R.Type, _: K.Type, _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ sums: UnsafeMutablePointer<Float>
        ) {
            let (nr, nk, lanes) = (R.count, K.count, V.scalarCount)
            var acc = InlineArray<24, V> { _ in V() }
            for e in 0..<(nr * nk) { acc[e] = V.load(UnsafePointer(sums + e * lanes)) }
            for i in 0..<ho {
                let xr = x + i &* rowStep
                let dr = dy + i &* dyRow
                for j in 0..<wo {
                    let d = V.load(UnsafeMutablePointer(mutating: dr + j &* 8), blockStride: dyPlane)
                    let px = xr + j &* stride
                    for r in 0..<nr {
                        for kj in 0..<nk { acc[r * nk + kj].addProduct(V(repeating: px[r &* xRow &+ kj]), d) }
                    }
                }
            }
            for e in 0..<(nr * nk) { acc[e].storeContiguous(sums + e * lanes) }
        }
    }

    // MARK: db

    /// db `[O]`: the sum of dY over images and pixels.
    public static func bias(_ dy: BlockedTensor) -> Tensor {
        let parts = max(1, min(Parallel.threads, dy.n))
        let partial = Tensor(zeros: [parts * dy.blocks * 8])
        let p = partial.pointer
        Parallel.chunks(dy.n, parts: parts) { part, images in
            for img in images {
                for b in 0..<dy.blocks {
                    let plane = dy.origin + img * dy.imageStride + b * dy.planeStride
                    var acc = SIMD8<Float>()
                    for i in 0..<dy.h {
                        let row = plane + i * dy.rowStride
                        for j in 0..<dy.w { acc += SIMD8.load(row + j * 8) }
                    }
                    let s = p + (part * dy.blocks + b) * 8
                    (SIMD8.load(s) + acc).store(s)
                }
            }
        }
        let db = Tensor(zeros: [dy.channels])
        for part in 0..<parts { for oc in 0..<dy.channels { db[oc] += p[part * dy.blocks * 8 + oc] } }
        return db
    }

    // MARK: dX

    /// dX of a convolution with `weight` `[O, C, kh, kw]`, blocked with a halo of `pad`, for an
    /// input of `h` × `w` pixels.
    public static func input(dy: BlockedTensor, weight: Tensor, window g: Window, h: Int, w: Int, pad: Int) -> BlockedTensor {
        let (o, c, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        let (sh, sw) = g.stride
        // Per axis and phase r (input positions r, r + s, …): the kernel taps that reach them, and the
        // dY offset of the first. Tap k reaches input a = s·i + k − p, so a ≡ r needs k ≡ r + p (mod s),
        // and then i = m + (r + p − k) / s for a = s·m + r.
        func taps(_ r: Int, _ p: Int, _ k: Int, _ s: Int) -> (taps: [Int], first: Int) {
            let ks = (0..<k).filter { (r + p - $0) % s == 0 }.sorted(by: >)
            return (ks, ks.first.map { (r + p - $0) / s } ?? 0)
        }
        var zeroFirst = false
        var phases: [(ra: Int, rb: Int, rows: [Int], cols: [Int], top: Int, left: Int)] = []
        for ra in 0..<min(sh, h) {
            for rb in 0..<min(sw, w) {
                let (rows, top) = taps(ra, g.pads[0], kh, sh)
                let (cols, left) = taps(rb, g.pads[1], kw, sw)
                if rows.isEmpty || cols.isEmpty {
                    zeroFirst = true
                } else {
                    phases.append((ra, rb, rows, cols, top, left))
                }
            }
        }
        // At stride 1 the one phase writes every row, and clears the halo around the rows it writes.
        let whole = !zeroFirst && sh == 1 && sw == 1 && phases.count == 1
        let dx =
            zeroFirst
            ? BlockedTensor(zeros: dy.n, channels: c, h: h, w: w, pad: pad)
            : BlockedTensor(uninitialized: dy.n, channels: c, h: h, w: w, pad: pad, zeroHalo: !whole)
        for ph in phases {
            // The phase's sub-kernel, as a forward convolution of dY: tap t of a row is kernel row rows[t].
            let (kr, kc) = (ph.rows.count, ph.cols.count)
            let sub = Tensor(uninitialized: [c, o, kr, kc])
            for ic in 0..<c {
                for oc in 0..<o {
                    for (ti, ki) in ph.rows.enumerated() {
                        for (tj, kj) in ph.cols.enumerated() {
                            sub[((ic * o + oc) * kr + ti) * kc + tj] = weight[((oc * c + ic) * kh + ki) * kw + kj]
                        }
                    }
                }
            }
            let conv = DirectConv(
                weight: sub, bias: nil, window: Window(kernel: [kr, kc], stride: [1, 1], pads: [0, 0, 0, 0]), inBlock: 8)
            // Output m of this phase reads dY rows m + top … m + top + kr − 1 (the same for columns),
            // rows outside dY being zero: read from the halo where it reaches, else from a wider copy.
            let (hr, wr) = ((h - ph.ra + sh - 1) / sh, (w - ph.rb + sw - 1) / sw)
            let reach = max(0, -ph.top, -ph.left, hr - 1 + ph.top + kr - 1 - (dy.h - 1), wr - 1 + ph.left + kc - 1 - (dy.w - 1))
            let src = dy.pad >= reach ? dy : dy.withPad(reach)
            let input = DirectConv.Input(
                base: UnsafePointer(src.origin + ph.top * src.rowStride + ph.left * 8), n: src.n, h: hr + kr - 1, w: wr + kc - 1,
                rowStride: src.rowStride, planeStride: src.planeStride, imageStride: src.imageStride)
            let out = DirectConv.Output(
                origin: dx.origin + ph.ra * dx.rowStride + ph.rb * 8, pixelStep: 8 * sw, rowStride: sh * dx.rowStride,
                planeStride: dx.planeStride, imageStride: dx.imageStride)
            conv.run(input, g: conv.window, ho: hr, wo: wr, into: out, residual: nil, relu: false, halo: whole ? pad : 0)
        }
        return dx
    }
}
