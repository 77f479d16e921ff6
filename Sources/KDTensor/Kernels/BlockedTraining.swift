/// Training's element-wise layers on channel-blocked activations (NCHW8c with a zero halo), so a
/// convolutional network's forward and backward passes stay in the layout of the direct
/// convolution from its first layer to its global pool: batch norm, ReLU, residual additions,
/// max pooling and global average pooling, each with its backward rule.
///
/// Reductions over images (batch statistics, parameter gradients) are per-thread partial sums
/// added in thread order: results depend on the thread count only.
public enum BlockedOps {
    /// What batch norm's backward rule needs: the input (x̂ is recomputed from it) and the statistics.
    public struct BatchNormSaved {
        public let x: BlockedTensor
        public let mean: [Float]
        public let invStd: [Float]
        /// Running statistics were used: the input does not affect them.
        public let frozen: Bool
        /// Synchronized batch norm (`BatchNorm.synchronized`): the ranks and the count over all of them.
        public var sync: World? = nil
        public var count: Double = 0
        /// The per-channel a, b of the forward's y = a·x + b (padded to whole blocks): a fused
        /// ReLU's mask is recomputed from x with the forward's own arithmetic, not read from its output.
        public var a: [Float] = []
        public var b: [Float] = []
    }

    /// Per (part, block) sums over the interior pixels of the images in each part: `f(x, shift)`
    /// for each pixel vector `x`, in float within a plane and in double across planes.
    static func channelSums(
        _ t: BlockedTensor, parts: Int, _ body: (_ part: Int, _ image: Int, _ block: Int, _ plane: UnsafeMutablePointer<Float>) -> Void
    ) {
        Parallel.chunks(t.n, parts: parts) { part, images in
            for img in images {
                for b in 0..<t.blocks { body(part, img, b, t.origin + img * t.imageStride + b * t.planeStride) }
            }
        }
    }

    /// Batch statistics (biased variance) per channel: shifted sums Σ(x − s) and Σ(x − s)² with s a
    /// sample of the channel, so the variance is not the difference of two large numbers.
    static func statistics(_ x: BlockedTensor) -> (mean: [Double], variance: [Double]) {
        let parts = max(1, min(Parallel.threads, x.n))
        let width = x.blocks * 8
        var shift = [Float](repeating: 0, count: width)
        for b in 0..<x.blocks { for lane in 0..<8 { shift[b * 8 + lane] = x.origin[b * x.planeStride + lane] } }
        var sums = [Double](repeating: 0, count: parts * width * 2)
        let (rows, cols, row) = (x.h, x.w, x.rowStride)
        shift.withUnsafeBufferPointer { sh in
            sums.withUnsafeMutableBufferPointer { out in
                let (sp, op) = (sh.baseAddress!, UncheckedSendable(out.baseAddress!))
                channelSums(x, parts: parts) { part, _, b, plane in
                    let s = SIMD8.load(sp + b * 8)
                    var (a, q) = (SIMD8<Float>(), SIMD8<Float>())
                    for i in 0..<rows {
                        let r = plane + i * row
                        for j in 0..<cols {
                            let d = SIMD8.load(r + j * 8) - s
                            a += d
                            q += d * d
                        }
                    }
                    let o = op.value + (part * width + b * 8) * 2
                    for lane in 0..<8 {
                        o[lane * 2] += Double(a[lane])
                        o[lane * 2 + 1] += Double(q[lane])
                    }
                }
            }
        }
        let m = Double(x.n * x.h * x.w)
        var mean = [Double](repeating: 0, count: x.channels)
        var variance = [Double](repeating: 0, count: x.channels)
        for ch in 0..<x.channels {
            var (a, q) = (0.0, 0.0)
            for part in 0..<parts {
                a += sums[(part * width + ch) * 2]
                q += sums[(part * width + ch) * 2 + 1]
            }
            let d = a / m
            mean[ch] = Double(shift[ch]) + d
            variance[ch] = max(0, q / m - d * d)
        }
        return (mean, variance)
    }

    /// y = a·x + b per channel over the interior (the halo stays zero), then max(y, 0) with `relu`
    /// (and min(·, upper): ReLU6 is upper 6).
    static func affine(
        _ x: BlockedTensor, a: [Float], b: [Float], relu: Bool = false, upper: Float = .infinity, residual: BlockedTensor? = nil
    ) -> BlockedTensor {
        let top = SIMD8<Float>(repeating: upper)
        let residual = residual?.withPad(x.pad)
        let offset = residual.map { $0.origin - x.origin } ?? 0
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad, zeroHalo: false)
        var av = [Float](repeating: 0, count: x.blocks * 8)
        var bv = [Float](repeating: 0, count: x.blocks * 8)
        for ch in 0..<x.channels {
            av[ch] = a[ch]
            bv[ch] = b[ch]
        }
        let (rows, cols, row) = (x.h, x.w, x.rowStride)
        av.withUnsafeBufferPointer { ap in
            bv.withUnsafeBufferPointer { bp in
                let (ap, bp) = (ap.baseAddress!, bp.baseAddress!)
                Parallel.chunks(x.n * x.blocks, parts: x.data.count > 1 << 15 ? Parallel.threads : 1) { _, range in
                    for u in range {
                        let b = u % x.blocks
                        y.zeroHalo(plane: u)
                        let (src, dst) = (x.origin + u * x.planeStride, y.origin + u * y.planeStride)
                        let (va, vb) = (SIMD8.load(ap + b * 8), SIMD8.load(bp + b * 8))
                        for i in 0..<rows {
                            let (s, d) = (src + i * row, dst + i * row)
                            if residual != nil {
                                for j in 0..<cols {
                                    (SIMD8.load(s + j * 8) * va + vb + SIMD8.load(s + offset + j * 8)).relu().store(d + j * 8)
                                }
                            } else if relu && upper.isFinite {
                                for j in 0..<cols { pointwiseMin((SIMD8.load(s + j * 8) * va + vb).relu(), top).store(d + j * 8) }
                            } else if relu {
                                for j in 0..<cols { (SIMD8.load(s + j * 8) * va + vb).relu().store(d + j * 8) }
                            } else {
                                for j in 0..<cols { (SIMD8.load(s + j * 8) * va + vb).store(d + j * 8) }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Batch norm with batch statistics; updates the running ones in place (running = (1 − m)·running
    /// + m·batch, the unbiased variance, as PyTorch does).
    /// With `relu` the output is max(y, 0) (clipped at `upper`): batch norm and the ReLU or ReLU6
    /// after it in one pass.
    public static func batchNormTraining(
        _ x: BlockedTensor, scale: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float,
        relu: Bool = false, upper: Float = .infinity, residual: BlockedTensor? = nil, sync: World? = nil
    ) throws -> (BlockedTensor, BatchNormSaved) {
        guard scale.shape == [x.channels], bias.shape == [x.channels] else {
            throw TensorError("batchnorm scale \(scale.shape) does not match input \(x.shape)")
        }
        var (mean, variance) = statistics(x)
        var m = Double(x.n * x.h * x.w)
        if let sync {
            (mean, variance, m) = try BatchNorm.synchronized(mean: mean, variance: variance, count: m, reference: runningMean, world: sync)
        }
        var invStd = [Float](repeating: 0, count: x.channels)
        var a = [Float](repeating: 0, count: x.channels)
        var b = [Float](repeating: 0, count: x.channels)
        for ch in 0..<x.channels {
            invStd[ch] = Float(1 / (variance[ch] + Double(epsilon)).squareRoot())
            a[ch] = scale[ch] * invStd[ch]
            b[ch] = bias[ch] - Float(mean[ch]) * a[ch]
            let unbiased = m > 1 ? variance[ch] * m / (m - 1) : variance[ch]
            runningMean[ch] = (1 - momentum) * runningMean[ch] + momentum * Float(mean[ch])
            runningVar[ch] = (1 - momentum) * runningVar[ch] + momentum * Float(unbiased)
        }
        let y = affine(x, a: a, b: b, relu: relu, upper: upper, residual: residual)
        return (
            y,
            BatchNormSaved(
                x: x, mean: mean.map { Float($0) }, invStd: invStd, frozen: false, sync: sync, count: m, a: padded(a, x), b: padded(b, x))
        )
    }

    /// Batch norm with the running statistics.
    public static func batchNormInference(
        _ x: BlockedTensor, scale: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, epsilon: Float, relu: Bool = false,
        upper: Float = .infinity, residual: BlockedTensor? = nil
    ) throws -> (BlockedTensor, BatchNormSaved) {
        guard scale.shape == [x.channels], bias.shape == [x.channels] else {
            throw TensorError("batchnorm scale \(scale.shape) does not match input \(x.shape)")
        }
        let invStd = (0..<x.channels).map { 1 / (runningVar[$0] + epsilon).squareRoot() }
        let a = (0..<x.channels).map { scale[$0] * invStd[$0] }
        let b = (0..<x.channels).map { bias[$0] - runningMean[$0] * a[$0] }
        return (
            affine(x, a: a, b: b, relu: relu, upper: upper, residual: residual),
            BatchNormSaved(x: x, mean: runningMean.array, invStd: invStd, frozen: true, a: padded(a, x), b: padded(b, x))
        )
    }

    /// Per-channel values padded with zeros to whole blocks of eight.
    static func padded(_ v: [Float], _ x: BlockedTensor) -> [Float] { v + [Float](repeating: 0, count: x.blocks * 8 - v.count) }

    /// Where a fused ReLU (clipped at `top`) stopped the gradient: its output y = relu(a·x + b)
    /// computed as the forward computed it, then the test `batchNormBackward` applies to a stored y.
    @inline(__always)
    static func reluStops(
        _ x: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>, top: SIMD8<Float>, clipped: Bool
    ) -> SIMDMask<SIMD8<Int32>> {
        let z = (x * a + b).relu()
        let out = clipped ? pointwiseMin(z, top) : z
        return (out .<= 0) .| (out .>= top)
    }

    /// dx, dγ, dβ of batch norm: dx = γ·σ⁻¹·(dy − mean(dy) − x̂·mean(dy·x̂)), or γ·σ⁻¹·dy with frozen
    /// statistics. With `reluOutput` (batch norm fused with the ReLU after it), `dy` is the ReLU's
    /// output gradient and is taken where that output was positive (and below `upper`).
    /// `overwrite`: the caller gives `dy` away (nothing reads it again), so dx is written over it,
    /// each vector where its dy was just read, rather than into a new buffer whose lines would
    /// first be fetched from memory for the writes.
    public static func batchNormBackward(
        dy: BlockedTensor, saved s: BatchNormSaved, scale: Tensor, reluOutput: BlockedTensor? = nil, upper: Float = .infinity,
        overwrite: Bool = false
    ) throws -> (
        dx: BlockedTensor, dscale: Tensor, dbias: Tensor
    ) {
        let x = s.x
        let dy = dy.withPad(x.pad)
        // With the forward's a, b saved, the ReLU's mask comes from x (one tensor fewer to read).
        let fromX = reluOutput != nil && s.a.count == x.blocks * 8 && s.b.count == x.blocks * 8
        let mask = fromX ? nil : reluOutput?.withPad(x.pad)
        let maskOffset = mask.map { $0.origin - x.origin } ?? 0
        let masked = mask != nil
        let top = SIMD8<Float>(repeating: upper)
        let clipped = upper.isFinite
        let (fa, fb) = fromX ? (s.a, s.b) : ([Float](repeating: 0, count: x.blocks * 8), [Float](repeating: 0, count: x.blocks * 8))
        let parts = max(1, min(Parallel.threads, x.n))
        let width = x.blocks * 8
        var mean = [Float](repeating: 0, count: width)
        var inv = [Float](repeating: 0, count: width)
        for ch in 0..<x.channels {
            mean[ch] = s.mean[ch]
            inv[ch] = s.invStd[ch]
        }
        // Σ dy and Σ dy·x̂ per channel.
        var sums = [Double](repeating: 0, count: parts * width * 2)
        let (rows, cols, row) = (x.h, x.w, x.rowStride)
        let dyOffset = dy.origin - x.origin
        mean.withUnsafeBufferPointer { mp in
            inv.withUnsafeBufferPointer { ip in
                sums.withUnsafeMutableBufferPointer { out in
                    fa.withUnsafeBufferPointer { fap in
                        fb.withUnsafeBufferPointer { fbp in
                            let (mp, ip, op) = (mp.baseAddress!, ip.baseAddress!, UncheckedSendable(out.baseAddress!))
                            let (fap, fbp) = (fap.baseAddress!, fbp.baseAddress!)
                            channelSums(x, parts: parts) { part, _, b, plane in
                                let (mv, iv) = (SIMD8.load(mp + b * 8), SIMD8.load(ip + b * 8))
                                let (va, vb) = (SIMD8.load(fap + b * 8), SIMD8.load(fbp + b * 8))
                                var (sd, sdx) = (SIMD8<Float>(), SIMD8<Float>())
                                for i in 0..<rows {
                                    let r = plane + i * row
                                    for j in 0..<cols {
                                        var g = SIMD8.load(r + dyOffset + j * 8)
                                        let xv = SIMD8.load(r + j * 8)
                                        if fromX {
                                            g.replace(with: 0, where: reluStops(xv, va, vb, top: top, clipped: clipped))
                                        } else if masked {
                                            let out = SIMD8.load(r + maskOffset + j * 8)
                                            g.replace(with: 0, where: (out .<= 0) .| (out .>= top))
                                        }
                                        sd += g
                                        sdx += g * ((xv - mv) * iv)
                                    }
                                }
                                let o = op.value + (part * width + b * 8) * 2
                                for lane in 0..<8 {
                                    o[lane * 2] += Double(sd[lane])
                                    o[lane * 2 + 1] += Double(sdx[lane])
                                }
                            }
                        }
                    }
                }
            }
        }
        let dscale = Tensor(zeros: [x.channels])
        let dbias = Tensor(zeros: [x.channels])
        var m = Float(x.n * x.h * x.w)
        // dx = k·dy + c1 + c2·x per channel, with k = γσ⁻¹, c2 = −k·σ⁻¹·Σdyx̂/m, c1 = −k·Σdy/m − c2·μ.
        var k = [Float](repeating: 0, count: width)
        var c1 = [Float](repeating: 0, count: width)
        var c2 = [Float](repeating: 0, count: width)
        var sdy = [Double](repeating: 0, count: x.channels)
        var sdyx = [Double](repeating: 0, count: x.channels)
        for ch in 0..<x.channels {
            for part in 0..<parts {
                sdy[ch] += sums[(part * width + ch) * 2]
                sdyx[ch] += sums[(part * width + ch) * 2 + 1]
            }
            // The parameters' gradients stay this rank's (with sync too): the trainer sums them.
            dbias[ch] = Float(sdy[ch])
            dscale[ch] = Float(sdyx[ch])
        }
        if let world = s.sync, !s.frozen {
            (sdy, sdyx) = try BatchNorm.synchronizedSums(sdy, sdyx, world: world)
            m = Float(s.count)
        }
        for ch in 0..<x.channels {
            let (sd, sdx) = (sdy[ch], sdyx[ch])
            k[ch] = scale[ch] * inv[ch]
            if s.frozen { continue }
            c2[ch] = -k[ch] * inv[ch] * Float(sdx) / m
            c1[ch] = -k[ch] * Float(sd) / m - c2[ch] * mean[ch]
        }
        // dy has x's shape and halo here (withPad above), so it can hold dx.
        let dx = overwrite ? dy : BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad, zeroHalo: false)
        // k, c1, c2 and the forward's a, b side by side, a block of eight each.
        let coefficients = k + c1 + c2 + fa + fb
        coefficients.withUnsafeBufferPointer { cp in
            let cp = cp.baseAddress!
            Parallel.chunks(x.n * x.blocks, parts: x.data.count > 1 << 15 ? Parallel.threads : 1) { _, range in
                for u in range {
                    let b = u % x.blocks
                    dx.zeroHalo(plane: u)
                    func at(_ k: Int) -> SIMD8<Float> { SIMD8.load(cp + k * width + b * 8) }
                    let (vk, v1, v2, va, vb) = (at(0), at(1), at(2), at(3), at(4))
                    let (src, grad, dst) = (x.origin + u * x.planeStride, dy.origin + u * x.planeStride, dx.origin + u * x.planeStride)
                    for i in 0..<rows {
                        let (xs, gs, ds) = (src + i * row, grad + i * row, dst + i * row)
                        for j in 0..<cols {
                            var g = SIMD8.load(gs + j * 8)
                            let xv = SIMD8.load(xs + j * 8)
                            if fromX {
                                g.replace(with: 0, where: reluStops(xv, va, vb, top: top, clipped: clipped))
                            } else if masked {
                                let out = SIMD8.load(xs + maskOffset + j * 8)
                                g.replace(with: 0, where: (out .<= 0) .| (out .>= top))
                            }
                            (g * vk + v1 + xv * v2).store(ds + j * 8)
                        }
                    }
                }
            }
        }
        return (dx, dscale, dbias)
    }

    /// max(x, 0) as a new tensor.
    public static func relu(_ x: BlockedTensor) -> BlockedTensor {
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad)
        let (src, dst) = (x.data.pointer, y.data.pointer)
        let vectors = x.data.count / 8
        // Over the whole buffer: the halo is zero and stays zero.
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range { SIMD8.load(src + i * 8).relu().store(dst + i * 8) }
        }
        return y
    }

    /// dx = dy where the ReLU's output y was positive; with `overwrite` (the caller gives `dy`
    /// away) written over dy.
    public static func reluBackward(dy: BlockedTensor, y: BlockedTensor, overwrite: Bool = false) -> BlockedTensor {
        let dy = dy.withPad(y.pad)
        let dx = overwrite ? dy : BlockedTensor(uninitialized: y.n, channels: y.channels, h: y.h, w: y.w, pad: y.pad)
        let (g, out, d) = (dy.data.pointer, y.data.pointer, dx.data.pointer)
        let vectors = y.data.count / 8
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range {
                let v = SIMD8.load(g + i * 8)
                v.replacing(with: 0, where: SIMD8.load(out + i * 8) .<= 0).store(d + i * 8)
            }
        }
        return dx
    }

    /// The gradients of both inputs of relu(a + b): dy where the output y was positive, twice
    /// (the second a separate tensor, so that each input's other gradients can add into its own).
    /// With `overwrite` (the caller gives `dy` away) the first is written over dy.
    public static func addReluBackward(dy: BlockedTensor, y: BlockedTensor, overwrite: Bool = false) -> (BlockedTensor, BlockedTensor) {
        let dy = dy.withPad(y.pad)
        let first = overwrite ? dy : BlockedTensor(uninitialized: y.n, channels: y.channels, h: y.h, w: y.w, pad: y.pad)
        let second = BlockedTensor(uninitialized: y.n, channels: y.channels, h: y.h, w: y.w, pad: y.pad)
        let (g, out, d1, d2) = (dy.data.pointer, y.data.pointer, first.data.pointer, second.data.pointer)
        let vectors = y.data.count / 8
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range {
                let v = SIMD8.load(g + i * 8).replacing(with: 0, where: SIMD8.load(out + i * 8) .<= 0)
                v.store(d1 + i * 8)
                v.store(d2 + i * 8)
            }
        }
        return (first, second)
    }

    /// dy where the ReLU's output y was positive (the gradient of its input).
    public static func masked(_ dy: BlockedTensor, by y: BlockedTensor, overwrite: Bool = false) -> BlockedTensor {
        reluBackward(dy: dy, y: y, overwrite: overwrite)
    }

    /// a += b in place (same shape; b re-padded to a's halo if it differs).
    public static func accumulate(_ a: BlockedTensor, _ b: BlockedTensor) {
        let b = b.withPad(a.pad)
        let (pa, pb) = (a.data.pointer, b.data.pointer)
        let vectors = a.data.count / 8
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range { (SIMD8.load(pa + i * 8) + SIMD8.load(pb + i * 8)).store(pa + i * 8) }
        }
    }

    /// A copy (same halo).
    public static func copy(_ x: BlockedTensor) -> BlockedTensor {
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad)
        y.data.pointer.update(from: x.data.pointer, count: x.data.count)
        return y
    }

    /// Max pooling that records, per output value, the interior pixel index it came from (−1
    /// when the window saw only padding), for the backward rule.
    public static func maxPoolTraining(_ x: BlockedTensor, _ g: Window) throws -> (BlockedTensor, [Int32]) {
        let os = try Pooling.outputShape(x.shape, g)
        let (ho, wo) = (os[2], os[3])
        let y = BlockedTensor(uninitialized: x.n, channels: x.channels, h: ho, w: wo, pad: x.pad)
        var argmax = [Int32](repeating: -1, count: x.n * x.blocks * ho * wo * 8)
        let (hh, ww, row, orow) = (x.h, x.w, x.rowStride, y.rowStride)
        argmax.withUnsafeMutableBufferPointer { am in
            let amp = UncheckedSendable(am.baseAddress!)
            Parallel.chunks(x.n * x.blocks) { _, range in
                for u in range {
                    let (s, d) = (x.origin + u * x.planeStride, y.origin + u * y.planeStride)
                    let idx = amp.value + u * ho * wo * 8
                    for oi in 0..<ho {
                        for oj in 0..<wo {
                            var best = SIMD8<Float>(repeating: -.infinity)
                            var at = SIMD8<Int32>(repeating: -1)
                            for ki in 0..<g.kernel.h {
                                let ii = oi * g.stride.h - g.pads[0] + ki * g.dilation.h
                                if ii < 0 || ii >= hh { continue }
                                for kj in 0..<g.kernel.w {
                                    let jj = oj * g.stride.w - g.pads[1] + kj * g.dilation.w
                                    if jj < 0 || jj >= ww { continue }
                                    let v = SIMD8.load(s + ii * row + jj * 8)
                                    // First maximum wins; NaN wins (as in Pooling.maxForward).
                                    let take = (v .> best) .| (at .< 0) .| (v .!= v)
                                    best.replace(with: v, where: take)
                                    at.replace(with: SIMD8(repeating: Int32(ii * ww + jj)), where: take)
                                }
                            }
                            best.store(d + oi * orow + oj * 8)
                            for lane in 0..<8 { idx[(oi * wo + oj) * 8 + lane] = at[lane] }
                        }
                    }
                }
            }
        }
        return (y, argmax)
    }

    /// dx of max pooling: each output's gradient goes to the input pixel that won.
    public static func maxPoolBackward(dy: BlockedTensor, argmax: [Int32], input: BlockedTensor) -> BlockedTensor {
        let dx = BlockedTensor(zeros: input.n, channels: input.channels, h: input.h, w: input.w, pad: input.pad)
        let (ho, wo, ww) = (dy.h, dy.w, input.w)
        argmax.withUnsafeBufferPointer { am in
            let amp = am.baseAddress!
            Parallel.chunks(input.n * input.blocks) { _, range in
                for u in range {
                    let (g, d) = (dy.origin + u * dy.planeStride, dx.origin + u * dx.planeStride)
                    let idx = amp + u * ho * wo * 8
                    for oi in 0..<ho {
                        for oj in 0..<wo {
                            for lane in 0..<8 {
                                let at = Int(idx[(oi * wo + oj) * 8 + lane])
                                if at < 0 { continue }
                                d[(at / ww) * dx.rowStride + (at % ww) * 8 + lane] += g[oi * dy.rowStride + oj * 8 + lane]
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// dx of global average pooling: dy / (H·W) at every pixel of each channel.
    public static func globalAveragePoolBackward(dy: Tensor, shape: [Int], pad: Int) -> BlockedTensor {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let dx = BlockedTensor(uninitialized: n, channels: c, h: h, w: w, pad: pad)
        let inv = 1 / Float(h * w)
        for img in 0..<n {
            for b in 0..<dx.blocks {
                var v = SIMD8<Float>()
                for lane in 0..<min(8, c - b * 8) { v[lane] = dy[img * c + b * 8 + lane] * inv }
                let plane = dx.origin + img * dx.imageStride + b * dx.planeStride
                for i in 0..<h { for j in 0..<w { v.store(plane + i * dx.rowStride + j * 8) } }
            }
        }
        return dx
    }
}
