/// Depthwise convolution (groups = input channels, one kh × kw filter per output channel, output
/// channel o reading input channel o / m for a channel multiplier m) on NCHW, as a stencil: each
/// output row accumulates its kh·kw shifted input rows in place (contiguous at stride 1, so the
/// inner loop vectorises), with the bias first and the activation last while the row is in cache.
/// Planes run in parallel. Gradients are the same stencils transposed; the weight gradient sums
/// each channel's images in order, so it does not depend on the thread count.
public enum Depthwise {
    /// Whether a convolution is depthwise: weight [C·m, 1, kh, kw] with groups = C.
    public static func applies(input: [Int], weight: [Int], groups: Int) -> Bool {
        input.count == 4 && weight.count == 4 && groups > 1 && groups == input[1] && weight[1] == 1 && weight[0] % groups == 0
    }

    /// The output columns `oj` whose tap `kj` lands inside a row of width `w`.
    @inline(__always)
    static func columns(kj: Int, _ g: Window, w: Int, wo: Int) -> Range<Int> {
        let shift = kj * g.dilation.w - g.pads[1]
        // oj·s + shift ≥ 0  and  oj·s + shift ≤ w − 1
        let lo = shift >= 0 ? 0 : (-shift + g.stride.w - 1) / g.stride.w
        let hiRaw = w - 1 - shift
        let hi = hiRaw < 0 ? 0 : min(wo, hiRaw / g.stride.w + 1)
        return lo..<max(lo, hi)
    }

    /// Forward with the bias first and the epilogue's activation last (it has no residual), in
    /// registers: each output row is
    /// computed 16 columns at a time, every tap added to the same accumulator. Each input plane is
    /// first copied into its column phases (phase p holds columns p, p + s, p + 2s, … for stride s;
    /// one phase at stride 1) with zero margins on both sides, so every tap of every chunk is one
    /// unconditional contiguous load, and padding reads zeros.
    public static func forward(x: Tensor, weight: Tensor, bias: Tensor?, _ g: Window, _ epilogue: Epilogue = .none) throws -> Tensor {
        precondition(epilogue.residual == nil, "the depthwise kernels take no residual")
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        guard applies(input: x.shape, weight: weight.shape, groups: c), (weight.shape[2], weight.shape[3]) == g.kernel else {
            throw TensorError("depthwise conv2d: input \(x.shape) does not match weight \(weight.shape)")
        }
        let o = weight.shape[0]
        let m = o / c
        let (ho, wo) = (try g.outputSize(h, axis: 0), try g.outputSize(w, axis: 1))
        let y = Tensor(uninitialized: [n, o, ho, wo])
        let kw = g.kernel.w
        let sw = g.stride.w
        // Each tap's phase and column offset q (output column j reads phase column j + q).
        let taps = (0..<kw).map { kj -> (phase: Int, offset: Int) in
            let shift = kj * g.dilation.w - g.pads[1]
            let q = shift >= 0 ? shift / sw : -((-shift + sw - 1) / sw)
            return (shift - q * sw, q)
        }
        let chunks = (wo + 15) / 16
        let left = max(0, -(taps.map(\.offset).min() ?? 0))
        // A phase row: `left` zeros, the phase's columns, zeros up to the last chunk's reach.
        let rowWidth = left + max((w + sw - 1) / sw, chunks * 16 + (taps.map(\.offset).max() ?? 0)) + 1
        let plan = Plan(
            x: x, y: y, weight: weight, bias: bias, window: g, c: c, h: h, w: w, o: o, m: m, ho: ho, wo: wo, chunks: chunks,
            left: left, rowWidth: rowWidth,
            tapOffsets: taps.map { $0.phase * h * rowWidth + left + $0.offset })
        epilogue.accept(plan)
        return y
    }

    /// One forward call's sizes, run by `visit` with its epilogue as a concrete type.
    struct Plan: ActivationVisitor {
        let x: Tensor, y: Tensor, weight: Tensor, bias: Tensor?, window: Window
        let c: Int, h: Int, w: Int, o: Int, m: Int, ho: Int, wo: Int, chunks: Int, left: Int, rowWidth: Int
        /// Per kernel column: where its phase row starts in the scratch (plus the column offset).
        let tapOffsets: [Int]

        func visit<F: VectorFunction>(_ epilogue: F) {
            let g = window
            let (kh, kw) = g.kernel
            let sw = g.stride.w
            let (n, c, h, w, o, m, ho, wo, chunks, left, rowWidth) = (x.shape[0], c, h, w, o, m, ho, wo, chunks, left, rowWidth)
            Parallel.chunks(n * o, parts: n * o * ho * wo > 1 << 12 ? Parallel.threads : 1) { _, planes in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: sw * h * rowWidth)
                let out = UnsafeMutablePointer<Float>.allocate(capacity: chunks * 16)
                defer {
                    scratch.deallocate()
                    out.deallocate()
                }
                scratch.update(repeating: 0, count: sw * h * rowWidth)
                tapOffsets.withUnsafeBufferPointer { taps in
                    var lastInput = -1
                    for p in planes {
                        let (img, oc) = (p / o, p % o)
                        let inputPlane = img * c + oc / m
                        if inputPlane != lastInput {
                            let src = x.pointer + inputPlane * h * w
                            for ph in 0..<sw {
                                for i in 0..<h {
                                    let (line, dst) = (src + i * w, scratch + (ph * h + i) * rowWidth + left)
                                    if sw == 1 {
                                        dst.update(from: line, count: w)
                                    } else if sw == 2 {
                                        // Even or odd lanes of 32 values at a time.
                                        var col = 0
                                        while 2 * col + 32 + ph <= w {
                                            let (a, b) = (VectorMath.load(line + 2 * col + ph), VectorMath.load(line + 2 * col + ph + 16))
                                            VectorMath.store(VectorMath.V(lowHalf: a.evenHalf, highHalf: b.evenHalf), dst + col)
                                            col += 16
                                        }
                                        while 2 * col + ph < w {
                                            dst[col] = line[2 * col + ph]
                                            col += 1
                                        }
                                    } else {
                                        var col = 0
                                        while col * sw + ph < w {
                                            dst[col] = line[col * sw + ph]
                                            col += 1
                                        }
                                    }
                                }
                            }
                            lastInput = inputPlane
                        }
                        let dst = y.pointer + p * ho * wo
                        let filt = weight.pointer + oc * kh * kw
                        let b = bias?.pointer[oc] ?? 0
                        for oi in 0..<ho {
                            for chunk in 0..<chunks {
                                let j0 = chunk * 16
                                var acc = VectorMath.V(repeating: b)
                                for ki in 0..<kh {
                                    let ii = oi * g.stride.h - g.pads[0] + ki * g.dilation.h
                                    if ii < 0 || ii >= h { continue }
                                    let rowBase = scratch + ii * rowWidth + j0
                                    let f = filt + ki * kw
                                    if kw == 3 {
                                        acc += f[0] * VectorMath.load(rowBase + taps[0])
                                        acc += f[1] * VectorMath.load(rowBase + taps[1])
                                        acc += f[2] * VectorMath.load(rowBase + taps[2])
                                    } else {
                                        for kj in 0..<kw { acc += f[kj] * VectorMath.load(rowBase + taps[kj]) }
                                    }
                                }
                                VectorMath.store(epilogue(acc), out + j0)
                            }
                            (dst + oi * wo).update(from: out, count: wo)
                        }
                    }
                }
            }
        }
    }

    public static func backward(dy: Tensor, x: Tensor, weight: Tensor, hasBias: Bool, _ g: Window, needInput: Bool) -> (
        dx: Tensor?, dw: Tensor, db: Tensor?
    ) {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (dy.shape[1], dy.shape[2], dy.shape[3])
        let m = o / c
        let (kh, kw) = g.kernel
        let cols = (0..<kw).map { columns(kj: $0, g, w: w, wo: wo) }
        let sw = g.stride.w
        var dx: Tensor?
        if needInput {
            let t = Tensor(zeros: x.shape)
            // Parallel over input planes: each gathers from its m output planes.
            Parallel.chunks(n * c) { _, planes in
                for p in planes {
                    let (img, ic) = (p / c, p % c)
                    let dst = t.pointer + p * h * w
                    for k in 0..<m {
                        let oc = ic * m + k
                        let gsrc = dy.pointer + (img * o + oc) * ho * wo
                        let filt = weight.pointer + oc * kh * kw
                        for oi in 0..<ho {
                            let grow = gsrc + oi * wo
                            for ki in 0..<kh {
                                let ii = oi * g.stride.h - g.pads[0] + ki * g.dilation.h
                                if ii < 0 || ii >= h { continue }
                                let line = dst + ii * w
                                for kj in 0..<kw {
                                    let wv = filt[ki * kw + kj]
                                    let shift = kj * g.dilation.w - g.pads[1]
                                    for j in cols[kj] { line[j * sw + shift] += wv * grow[j] }
                                }
                            }
                        }
                    }
                }
            }
            dx = t
        }
        let dw = Tensor(zeros: weight.shape)
        let db = hasBias ? Tensor(zeros: [o]) : nil
        Parallel.chunks(o) { _, channels in
            for oc in channels {
                let ic = oc / m
                let acc = dw.pointer + oc * kh * kw
                var bsum: Float = 0
                for img in 0..<n {
                    let gsrc = dy.pointer + (img * o + oc) * ho * wo
                    let src = x.pointer + (img * c + ic) * h * w
                    for oi in 0..<ho {
                        let grow = gsrc + oi * wo
                        if hasBias { for j in 0..<wo { bsum += grow[j] } }
                        for ki in 0..<kh {
                            let ii = oi * g.stride.h - g.pads[0] + ki * g.dilation.h
                            if ii < 0 || ii >= h { continue }
                            let line = src + ii * w
                            for kj in 0..<kw {
                                let shift = kj * g.dilation.w - g.pads[1]
                                var s: Float = 0
                                for j in cols[kj] { s += grow[j] * line[j * sw + shift] }
                                acc[ki * kw + kj] += s
                            }
                        }
                    }
                }
                db?.pointer[oc] = bsum
            }
        }
        return (dx, dw, db)
    }
}

extension Depthwise {
    /// Whether the channel-blocked kernel runs a layer: one filter per channel (multiplier 1) and
    /// padding the input's zero halo already holds.
    public static func blockedApplies(_ x: BlockedTensor, weight: [Int], _ g: Window) -> Bool {
        weight.count == 4 && weight[0] == x.channels && weight[1] == 1 && g.pads.allSatisfy { $0 <= x.pad }
    }

    /// Depthwise convolution on the channel-blocked layout (NCHW8c): eight channels of a pixel are
    /// one vector, multiplied by the eight filters' tap and accumulated over the kh × kw taps, two
    /// output pixels to a 16-lane vector (`BlockedPlan`); padding is the input's zero halo, so no tap is ever checked. The
    /// output is blocked with halo `outPad`, its bias first and its epilogue applied in registers.
    public static func blocked(
        _ x: BlockedTensor, weight: Tensor, bias: Tensor?, _ g: Window, _ epilogue: Epilogue = .none, outPad: Int
    ) throws -> BlockedTensor {
        try blocked(x, filters: BlockedFilters(weight: weight, bias: bias), g, epilogue, outPad: outPad)
    }

    /// A depthwise layer's filters as the blocked kernel reads them: [block][kh·kw][16], each tap's
    /// eight filters twice (one 16-lane vector multiplies two output pixels), and the bias
    /// [block][16] the same way; lanes past the channels zero. Packed once per layer (an inference
    /// plan keeps them): packing per call was 4 % of efficientnet-lite0's inference at batch 1.
    public struct BlockedFilters: Sendable {
        public let weightShape: [Int]
        let packed: [Float]
        let bias: [Float]

        public init(weight: Tensor, bias: Tensor?) {
            weightShape = weight.shape
            let (channels, taps) = (weight.shape[0], weight.shape.count == 4 ? weight.shape[2] * weight.shape[3] : 0)
            let blocks = (channels + 7) / 8
            var packed = [Float](repeating: 0, count: blocks * taps * 16)
            var b16 = [Float](repeating: 0, count: blocks * 16)
            for ch in 0..<channels {
                let (blk, lane) = (ch / 8, ch % 8)
                for t in 0..<taps {
                    let v = weight.pointer[ch * taps + t]
                    packed[(blk * taps + t) * 16 + lane] = v
                    packed[(blk * taps + t) * 16 + 8 + lane] = v
                }
                let b = bias?.pointer[ch] ?? 0
                (b16[blk * 16 + lane], b16[blk * 16 + 8 + lane]) = (b, b)
            }
            self.packed = packed
            self.bias = b16
        }
    }

    /// Whether an inference plan stores a depthwise layer's input without the halo its padding
    /// needs, and the forward kernel pads each plane itself in a scratch plane: where the halo
    /// would at least double the plane. On efficientnet-lite0's 4 × 4 maps, a 5 × 5 filter's halo
    /// stores 64 pixels a plane for 16; writing them made the 192 → 1152 expansion before it
    /// 37 % slower (8 images, one thread: 530 µs with the halo, 387 µs without).
    public static func padsItself(h: Int, w: Int, pad: Int) -> Bool {
        let side = (h + 2 * pad, w + 2 * pad)
        return pad > 0 && side.0 * side.1 >= 2 * h * w && side.0 * side.1 * 8 <= scratchFloats
    }

    /// The largest plane (halo included, in floats) the forward kernel pads itself.
    static let scratchFloats = 1 << 13

    /// Whether the forward kernel runs a layer: as `blockedApplies`, or with less halo than the
    /// padding on a plane small enough to pad in a scratch plane.
    public static func blockedForwardApplies(_ x: BlockedTensor, weight: [Int], _ g: Window) -> Bool {
        guard weight.count == 4, weight[0] == x.channels, weight[1] == 1 else { return false }
        let pad = g.pads.max() ?? 0
        return pad <= x.pad || (x.h + 2 * pad) * (x.w + 2 * pad) * 8 <= scratchFloats
    }

    /// `blocked` with filters packed beforehand.
    public static func blocked(
        _ x: BlockedTensor, filters: BlockedFilters, _ g: Window, _ epilogue: Epilogue = .none, outPad: Int
    ) throws -> BlockedTensor {
        precondition(epilogue.residual == nil, "the depthwise kernels take no residual")
        let weight = filters.weightShape
        guard blockedForwardApplies(x, weight: weight, g), (weight[2], weight[3]) == g.kernel else {
            throw TensorError("blocked depthwise conv2d: input \(x.shape) (halo \(x.pad)) does not match weight \(weight)")
        }
        let (ho, wo) = (try g.outputSize(x.h, axis: 0), try g.outputSize(x.w, axis: 1))
        // Each worker clears the halo of the planes it writes. Cleared here first, the lines of
        // every plane's border went through this core's cache before the worker writing the plane
        // could have them: mobilenetv2's 8 × 8 layers (384 channels, batch 1) took 17 µs on two
        // threads against 9–10 µs on one, and 8.8–10.3 µs with each worker clearing its own.
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: ho, w: wo, pad: outPad, zeroHalo: false)
        let visitor = BlockedPlan(x: x, y: y, window: g, ho: ho, wo: wo, packed: filters.packed, bias: filters.bias)
        epilogue.accept(visitor)
        return y
    }

    /// One call's sizes. Output pixels go in pairs: one 16-lane vector holds two pixels' eight
    /// channels, so every tap is one 16-lane multiply and add for two pixels (AVX-512 runs it as one
    /// instruction; the eight-lane kernel before it ran the 5 × 5 layers of efficientnet-lite0 at
    /// twice ONNX Runtime's time). Tiles of 4, 2 and 1 pairs, then a lone last pixel.
    ///
    /// Each lane's sum is the same, in the same order, as one pixel at a time: the bias, then the
    /// taps row by row, left to right. A 3 × 3 filter's second and third rows are summed first and
    /// then added (the order `DepthwiseTests` pins down), except in the lone last pixel.
    struct BlockedPlan: ActivationVisitor {
        let x: BlockedTensor, y: BlockedTensor, window: Window, ho: Int, wo: Int
        let packed: [Float], bias: [Float]

        func visit<F: VectorFunction>(_ epilogue: F) {
            switch (window.stride.w == 1 ? (window.dilation.w == 1 ? 0 : 1) : 2, window.kernel.w) {
            case (0, 3): run(UnitStridePairs.self, Taps3.self, epilogue)
            case (0, 5): run(UnitStridePairs.self, Taps5.self, epilogue)
            case (0, _): run(UnitStridePairs.self, TapsAny.self, epilogue)
            case (1, 3): run(DilatedPairs.self, Taps3.self, epilogue)
            case (1, _): run(DilatedPairs.self, TapsAny.self, epilogue)
            case (_, 3): run(StridedPairs.self, Taps3.self, epilogue)
            case (_, 5): run(StridedPairs.self, Taps5.self, epilogue)
            case (_, _): run(StridedPairs.self, TapsAny.self, epilogue)
            }
            // Lanes past the channels: the bias there is 0 and every tap weight 0, so they hold f(0); an
            // epilogue with f(0) ≠ 0 would break the zero padding the next layer reads, so they are cleared.
            if x.channels % 8 != 0 && epilogue(VectorMath.V()) != VectorMath.V() {
                let (first, ys) = (x.channels % 8, y.rowStride)
                for plane in 0..<(x.n * x.blocks) where plane % x.blocks == x.blocks - 1 {
                    let dst = y.origin + plane * y.planeStride
                    for oi in 0..<ho { for oj in 0..<wo { for l in first..<8 { dst[oi * ys + oj * 8 + l] = 0 } } }
                }
            }
        }

        func run<S: DepthwisePairs, K: DepthwiseTaps, F: VectorFunction>(_: S.Type, _: K.Type, _ epilogue: F) {
            let g = window
            let (kh, kw) = g.kernel
            let (sh, sw) = (g.stride.h, g.stride.w)
            // With less halo than the padding, each plane is copied into a scratch plane with a
            // halo of the largest padding (its border cleared once), and the taps read it there.
            let pad = g.pads.max() ?? 0
            let inside = x.pad < pad
            let halo = inside ? pad : x.pad
            let (xs, ys) = (inside ? (x.w + 2 * pad) * 8 : x.rowStride, y.rowStride)
            let scratch = inside ? (x.h + 2 * pad) * xs : 0
            let planes = x.n * x.blocks
            let taps = Geometry(
                kh: kh, kw: kw, row: g.dilation.h * xs, column: g.dilation.w * 8, pixel: sw * 8, grouped: kh == 3 && kw == 3)
            packed.withUnsafeBufferPointer { pk in
                bias.withUnsafeBufferPointer { bs in
                    let (pk, bs) = (UncheckedSendable(pk.baseAddress!), UncheckedSendable(bs.baseAddress!))
                    // Split over the workers from about 2 k multiply-adds of eight lanes (a dispatch
                    // costs a microsecond). At 16 k, mobilenetv2's stride-2 layer from 8 × 8 to 4 × 4
                    // (3.5 k) ran on one thread and read there the half of its input that the other
                    // core had written: 9 µs on one thread, 15 µs on two.
                    Parallel.chunks(planes, parts: planes * ho * wo * kh * kw > 1 << 11 ? Parallel.threads : 1) { _, range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, scratch)) { padded in
                            let padded = padded.baseAddress!
                            if inside { padded.initialize(repeating: 0, count: scratch) }
                            for plane in range {
                                let blk = plane % x.blocks
                                // Input pixel (−halo, −halo) of this plane, and output pixel (0, 0).
                                var src = x.data.pointer + plane * x.planeStride
                                if inside {
                                    let from = x.origin + plane * x.planeStride
                                    for i in 0..<x.h {
                                        (padded + (i + pad) * xs + pad * 8).update(from: from + i * x.rowStride, count: x.w * 8)
                                    }
                                    src = padded
                                }
                                let dst = y.origin + plane * y.planeStride
                                let filt = UnsafePointer(pk.value + blk * kh * kw * 16)
                                let b = VectorMath.load(bs.value + blk * 16)
                                y.zeroHalo(plane: plane)
                                for oi in 0..<ho {
                                    let out = dst + oi * ys
                                    // Input row of tap ki: oi·sh − pads[0] + ki·dh, offset by the halo.
                                    let row = UnsafePointer(src + (oi * sh - g.pads[0] + halo) * xs + (halo - g.pads[1]) * 8)
                                    var oj = 0
                                    while oj + 8 <= wo {
                                        taps.pairs(Pairs4.self, S.self, K.self, epilogue, row + oj * sw * 8, filt, b, out + oj * 8)
                                        oj += 8
                                    }
                                    if oj + 4 <= wo {
                                        taps.pairs(Pairs2.self, S.self, K.self, epilogue, row + oj * sw * 8, filt, b, out + oj * 8)
                                        oj += 4
                                    }
                                    if oj + 2 <= wo {
                                        taps.pairs(Pairs1.self, S.self, K.self, epilogue, row + oj * sw * 8, filt, b, out + oj * 8)
                                        oj += 2
                                    }
                                    if oj < wo { taps.last(K.self, epilogue, row + oj * sw * 8, filt, b, out + oj * 8) }
                                }
                            }
                        }
                    }
                }
            }
        }

        /// Where the taps of one output pixel are, in floats from its first tap's input pixel.
        struct Geometry {
            let kh: Int, kw: Int
            /// From one filter row to the next (dilation · row stride), and one column to the next.
            let row: Int, column: Int
            /// From one output pixel's input to the next's (stride · 8).
            let pixel: Int
            /// A 3 × 3 filter: its second and third rows are summed before they are added.
            let grouped: Bool

            /// `P.count` pairs of output pixels from `r` (the first pixel's first tap), stored from `out`.
            @inline(__always)
            func pairs<P: DepthwiseTile, S: DepthwisePairs, K: DepthwiseTaps, F: VectorFunction>(
                _: P.Type, _: S.Type, _: K.Type, _ f: F, _ r: UnsafePointer<Float>, _ filt: UnsafePointer<Float>,
                _ b: VectorMath.V, _ out: UnsafeMutablePointer<Float>
            ) {
                typealias V = VectorMath.V
                let n = P.count
                let kw = K.count == 0 ? self.kw : K.count
                // Constants at stride 1 without dilation: tap kj of pair p then reads the pair at input
                // pixel kj + 2p, and the compiler loads each of a row's pairs once (11 loads for four
                // pairs of five taps, not 20).
                let (column, pixel) = (S.column(self), S.pixel(self))
                let pair = 2 &* pixel
                var (a0, a1, a2, a3) = (b, b, b, b)
                for ki in 0..<kh {
                    let rr = r + ki &* row
                    let fr = filt + ki &* kw &* 16
                    if grouped && ki > 0 {
                        let w0 = VectorMath.load(fr)
                        var t0 = w0 * S.load(rr, pixel)
                        var t1 = n > 1 ? w0 * S.load(rr + pair, pixel) : V()
                        var t2 = n > 2 ? w0 * S.load(rr + 2 &* pair, pixel) : V()
                        var t3 = n > 3 ? w0 * S.load(rr + 3 &* pair, pixel) : V()
                        for kj in 1..<kw {
                            let (wv, p) = (VectorMath.load(fr + kj &* 16), rr + kj &* column)
                            t0 += wv * S.load(p, pixel)
                            if n > 1 { t1 += wv * S.load(p + pair, pixel) }
                            if n > 2 { t2 += wv * S.load(p + 2 &* pair, pixel) }
                            if n > 3 { t3 += wv * S.load(p + 3 &* pair, pixel) }
                        }
                        a0 += t0
                        if n > 1 { a1 += t1 }
                        if n > 2 { a2 += t2 }
                        if n > 3 { a3 += t3 }
                    } else {
                        for kj in 0..<kw {
                            let (wv, p) = (VectorMath.load(fr + kj &* 16), rr + kj &* column)
                            a0 += wv * S.load(p, pixel)
                            if n > 1 { a1 += wv * S.load(p + pair, pixel) }
                            if n > 2 { a2 += wv * S.load(p + 2 &* pair, pixel) }
                            if n > 3 { a3 += wv * S.load(p + 3 &* pair, pixel) }
                        }
                    }
                }
                VectorMath.store(f(a0), out)
                if n > 1 { VectorMath.store(f(a1), out + 16) }
                if n > 2 { VectorMath.store(f(a2), out + 32) }
                if n > 3 { VectorMath.store(f(a3), out + 48) }
            }

            /// A row's lone last pixel, in both halves of one vector; the taps in order, ungrouped.
            @inline(__always)
            func last<K: DepthwiseTaps, F: VectorFunction>(
                _: K.Type, _ f: F, _ r: UnsafePointer<Float>, _ filt: UnsafePointer<Float>, _ b: VectorMath.V,
                _ out: UnsafeMutablePointer<Float>
            ) {
                let kw = K.count == 0 ? self.kw : K.count
                var a = b
                for ki in 0..<kh {
                    for kj in 0..<kw {
                        a += VectorMath.load(filt + (ki &* kw &+ kj) &* 16) * StridedPairs.load(r + (ki &* row &+ kj &* column), 0)
                    }
                }
                UnsafeMutableRawPointer(out).storeBytes(
                    of: unsafeBitCast(f(a), to: (SIMD8<Float>, SIMD8<Float>).self).0, as: SIMD8<Float>.self)
            }
        }
    }
}

/// How a depthwise tile reads the inputs of two adjacent output pixels as one 16-lane vector, and
/// how far apart its taps' and its pixels' inputs are (constants where the layer allows).
protocol DepthwisePairs {
    static func load(_ p: UnsafePointer<Float>, _ pixel: Int) -> VectorMath.V
    static func column(_ g: Depthwise.BlockedPlan.Geometry) -> Int
    static func pixel(_ g: Depthwise.BlockedPlan.Geometry) -> Int
}

/// At stride 1 pixel j + 1's eight channels follow pixel j's: one load. Without dilation the next
/// tap's input is the next pixel too.
enum UnitStridePairs: DepthwisePairs {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ pixel: Int) -> VectorMath.V { VectorMath.load(p) }
    @inline(__always) static func column(_ g: Depthwise.BlockedPlan.Geometry) -> Int { 8 }
    @inline(__always) static func pixel(_ g: Depthwise.BlockedPlan.Geometry) -> Int { 8 }
}

/// Stride 1 with dilation: one load per pair, the taps `dilation` pixels apart.
enum DilatedPairs: DepthwisePairs {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ pixel: Int) -> VectorMath.V { VectorMath.load(p) }
    @inline(__always) static func column(_ g: Depthwise.BlockedPlan.Geometry) -> Int { g.column }
    @inline(__always) static func pixel(_ g: Depthwise.BlockedPlan.Geometry) -> Int { 8 }
}

/// At stride s, two eight-lane loads `pixel` floats apart (8·s; 0 repeats one pixel).
enum StridedPairs: DepthwisePairs {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ pixel: Int) -> VectorMath.V {
        let raw = UnsafeRawPointer(p)
        return unsafeBitCast(
            (raw.loadUnaligned(as: SIMD8<Float>.self), raw.loadUnaligned(fromByteOffset: pixel &* 4, as: SIMD8<Float>.self)),
            to: VectorMath.V.self)
    }
    @inline(__always) static func column(_ g: Depthwise.BlockedPlan.Geometry) -> Int { g.column }
    @inline(__always) static func pixel(_ g: Depthwise.BlockedPlan.Geometry) -> Int { g.pixel }
}

/// How many pairs of output pixels a depthwise tile computes (declared here, next to the kernel, so
/// that a build without whole-module optimisation still sees the constants).
protocol DepthwiseTile { static var count: Int { get } }
enum Pairs1: DepthwiseTile { static var count: Int { 1 } }
enum Pairs2: DepthwiseTile { static var count: Int { 2 } }
enum Pairs4: DepthwiseTile { static var count: Int { 4 } }

/// A depthwise filter's width as a constant the compiler unrolls (0: the width the call gives).
protocol DepthwiseTaps { static var count: Int { get } }
enum Taps3: DepthwiseTaps { static var count: Int { 3 } }
enum Taps5: DepthwiseTaps { static var count: Int { 5 } }
enum TapsAny: DepthwiseTaps { static var count: Int { 0 } }
