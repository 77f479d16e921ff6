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
        let (kh, kw) = g.kernel
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
    /// one vector, multiplied by the eight filters' tap and accumulated over the kh × kw taps, four
    /// output pixels at a time; padding is the input's zero halo, so no tap is ever checked. The
    /// output is blocked with halo `outPad`, its bias first and its epilogue applied in registers.
    public static func blocked(
        _ x: BlockedTensor, weight: Tensor, bias: Tensor?, _ g: Window, _ epilogue: Epilogue = .none, outPad: Int
    ) throws -> BlockedTensor {
        try blocked(x, filters: BlockedFilters(weight: weight, bias: bias), g, epilogue, outPad: outPad)
    }

    /// A depthwise layer's filters as the blocked kernel reads them: [block][kh·kw][8], the bias
    /// [block][8], lanes past the channels zero. Packed once per layer (an inference plan keeps
    /// them): packing per call was 4 % of efficientnet-lite0's inference at batch 1.
    public struct BlockedFilters: Sendable {
        public let weightShape: [Int]
        let packed: [Float]
        let bias: [Float]

        public init(weight: Tensor, bias: Tensor?) {
            weightShape = weight.shape
            let (channels, taps) = (weight.shape[0], weight.shape.count == 4 ? weight.shape[2] * weight.shape[3] : 0)
            let blocks = (channels + 7) / 8
            var packed = [Float](repeating: 0, count: blocks * taps * 8)
            var b8 = [Float](repeating: 0, count: blocks * 8)
            for ch in 0..<channels {
                for t in 0..<taps { packed[((ch / 8) * taps + t) * 8 + ch % 8] = weight.pointer[ch * taps + t] }
                b8[(ch / 8) * 8 + ch % 8] = bias?.pointer[ch] ?? 0
            }
            self.packed = packed
            self.bias = b8
        }
    }

    /// `blocked` with filters packed beforehand.
    public static func blocked(
        _ x: BlockedTensor, filters: BlockedFilters, _ g: Window, _ epilogue: Epilogue = .none, outPad: Int
    ) throws -> BlockedTensor {
        precondition(epilogue.residual == nil, "the depthwise kernels take no residual")
        let weight = filters.weightShape
        guard blockedApplies(x, weight: weight, g), (weight[2], weight[3]) == g.kernel else {
            throw TensorError("blocked depthwise conv2d: input \(x.shape) (halo \(x.pad)) does not match weight \(weight)")
        }
        let (ho, wo) = (try g.outputSize(x.h, axis: 0), try g.outputSize(x.w, axis: 1))
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: ho, w: wo, pad: outPad)
        let visitor = BlockedPlan(x: x, y: y, window: g, ho: ho, wo: wo, packed: filters.packed, bias: filters.bias)
        epilogue.accept(visitor)
        return y
    }

    struct BlockedPlan: ActivationVisitor {
        let x: BlockedTensor, y: BlockedTensor, window: Window, ho: Int, wo: Int

        @inline(__always)
        static func finish<F: VectorFunction>(_ f: F, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Float>) {
            let v = f(SIMD16(lowHalf: a, highHalf: b))
            return (v.lowHalf, v.highHalf)
        }
        let packed: [Float], bias: [Float]

        func visit<F: VectorFunction>(_ epilogue: F) {
            typealias V8 = SIMD8<Float>
            @inline(__always) func load(_ p: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }
            @inline(__always) func store(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
                UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
            }
            // The epilogue is a 16-lane function: two pixels' channels at a time (a static function:
            // as a nested one capturing the epilogue it was not inlined, and its 16-lane argument
            // went through four 128-bit registers: 10 % of efficientnet-lite0's inference).
            let g = window
            let (kh, kw) = g.kernel
            let (sh, sw) = (g.stride.h, g.stride.w)
            let (dh, dw) = (g.dilation.h, g.dilation.w)
            let (xs, ys) = (x.rowStride, y.rowStride)
            let planes = x.n * x.blocks
            packed.withUnsafeBufferPointer { pk in
                bias.withUnsafeBufferPointer { bs in
                    let (pk, bs) = (UncheckedSendable(pk.baseAddress!), UncheckedSendable(bs.baseAddress!))
                    // Split over the workers from about 16 k multiply-adds of eight lanes (a 4 × 4 map
                    // of 144 blocks with 3 × 3 filters; a dispatch costs a microsecond or two).
                    Parallel.chunks(planes, parts: planes * ho * wo * kh * kw > 1 << 14 ? Parallel.threads : 1) { _, range in
                        for plane in range {
                            let blk = plane % x.blocks
                            // Input pixel (−pad, −pad) of this plane, and output pixel (0, 0).
                            let src = x.data.pointer + plane * x.planeStride
                            let dst = y.origin + plane * y.planeStride
                            let filt = pk.value + blk * kh * kw * 8
                            let b = load(bs.value + blk * 8)
                            for oi in 0..<ho {
                                let outRow = dst + oi * ys
                                // Input row of tap ki: oi·sh − pads[0] + ki·dh, offset by the halo.
                                let rowBase = src + (oi * sh - g.pads[0] + x.pad) * xs + (x.pad - g.pads[1]) * 8
                                var oj = 0
                                if kh == 3 && kw == 3 {
                                    // The nine taps' filters stay in registers across the row.
                                    let (w0, w1, w2) = (load(filt), load(filt + 8), load(filt + 16))
                                    let (w3, w4, w5) = (load(filt + 24), load(filt + 32), load(filt + 40))
                                    let (w6, w7, w8) = (load(filt + 48), load(filt + 56), load(filt + 64))
                                    let (c1, c2) = (dw * 8, 2 * dw * 8)
                                    let (r1, r2) = (dh * xs, 2 * dh * xs)
                                    @inline(__always) func pixel(_ p: UnsafeMutablePointer<Float>) -> V8 {
                                        var a = b + w0 * load(p) + w1 * load(p + c1) + w2 * load(p + c2)
                                        a += w3 * load(p + r1) + w4 * load(p + r1 + c1) + w5 * load(p + r1 + c2)
                                        a += w6 * load(p + r2) + w7 * load(p + r2 + c1) + w8 * load(p + r2 + c2)
                                        return a
                                    }
                                    while oj + 2 <= wo {
                                        let p = rowBase + oj * sw * 8
                                        let (e0, e1) = Self.finish(epilogue, pixel(p), pixel(p + sw * 8))
                                        store(e0, outRow + oj * 8)
                                        store(e1, outRow + (oj + 1) * 8)
                                        oj += 2
                                    }
                                }
                                while oj + 4 <= wo {
                                    var (a0, a1, a2, a3) = (b, b, b, b)
                                    for ki in 0..<kh {
                                        let r = rowBase + ki * dh * xs + oj * sw * 8
                                        for kj in 0..<kw {
                                            let wv = load(filt + (ki * kw + kj) * 8)
                                            let p = r + kj * dw * 8
                                            a0 += wv * load(p)
                                            a1 += wv * load(p + sw * 8)
                                            a2 += wv * load(p + 2 * sw * 8)
                                            a3 += wv * load(p + 3 * sw * 8)
                                        }
                                    }
                                    let (e0, e1) = Self.finish(epilogue, a0, a1)
                                    let (e2, e3) = Self.finish(epilogue, a2, a3)
                                    store(e0, outRow + oj * 8)
                                    store(e1, outRow + (oj + 1) * 8)
                                    store(e2, outRow + (oj + 2) * 8)
                                    store(e3, outRow + (oj + 3) * 8)
                                    oj += 4
                                }
                                while oj < wo {
                                    var a = b
                                    for ki in 0..<kh {
                                        let r = rowBase + ki * dh * xs + oj * sw * 8
                                        for kj in 0..<kw { a += load(filt + (ki * kw + kj) * 8) * load(r + kj * dw * 8) }
                                    }
                                    store(Self.finish(epilogue, a, a).0, outRow + oj * 8)
                                    oj += 1
                                }
                            }
                        }
                    }
                }
            }
            // Lanes past the channels: the bias there is 0 and every tap weight 0, so they hold f(0); an
            // epilogue with f(0) ≠ 0 would break the zero padding the next layer reads, so they are cleared.
            if x.channels % 8 != 0 && epilogue(VectorMath.V()) != VectorMath.V() {
                let first = x.channels % 8
                for plane in 0..<planes where plane % x.blocks == x.blocks - 1 {
                    let dst = y.origin + plane * y.planeStride
                    for oi in 0..<ho { for oj in 0..<wo { for l in first..<8 { dst[oi * ys + oj * 8 + l] = 0 } } }
                }
            }
        }
    }
}
