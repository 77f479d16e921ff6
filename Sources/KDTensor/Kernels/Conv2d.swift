/// Geometry of a 2-D convolution or pooling window over NCHW input.
public struct Window: Equatable, Sendable {
    public var kernel: (h: Int, w: Int)
    public var stride: (h: Int, w: Int)
    /// top, left, bottom, right
    public var pads: [Int]
    public var dilation: (h: Int, w: Int)
    public var ceilMode: Bool

    public init(kernel: [Int], stride: [Int], pads: [Int], dilation: [Int] = [1, 1], ceilMode: Bool = false) {
        self.kernel = (kernel[0], kernel[1])
        self.stride = (stride[0], stride[1])
        self.pads = pads
        self.dilation = (dilation[0], dilation[1])
        self.ceilMode = ceilMode
    }

    public static func == (a: Window, b: Window) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.pads == b.pads && a.dilation == b.dilation && a.ceilMode == b.ceilMode
    }

    /// Output size along one axis (Spec §7.2, the one definition the graph's shape rule uses too).
    public func outputSize(_ input: Int, axis: Int) throws -> Int {
        guard
            let out = Window.outputSize(
                size: input, kernel: axis == 0 ? kernel.h : kernel.w, stride: axis == 0 ? stride.h : stride.w, padBegin: pads[axis],
                padEnd: pads[axis + 2], dilation: axis == 0 ? dilation.h : dilation.w, ceil: ceilMode)
        else { throw TensorError("window \(kernel) does not fit input size \(input) with pads \(pads)") }
        return out
    }

    /// The output size of a sliding window along one axis (convolution and pooling alike):
    /// `⌊(size + padBegin + padEnd − dilation·(kernel − 1) − 1) / stride⌋ + 1`, rounded up instead
    /// with `ceil`, where (as in PyTorch and ONNX) the last window must start inside the input or
    /// its leading padding. Nil when the window does not fit or a size overflows.
    public static func outputSize(size: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int, dilation: Int, ceil: Bool) -> Int? {
        guard size >= 1, kernel >= 1, stride >= 1, dilation >= 1, padBegin >= 0, padEnd >= 0 else { return nil }
        let (k1, o1) = dilation.multipliedReportingOverflow(by: kernel - 1)
        let (p, o2) = padBegin.addingReportingOverflow(padEnd)
        let (sp, o3) = size.addingReportingOverflow(p)
        guard !o1, !o2, !o3 else { return nil }
        let span = sp - k1 - 1
        guard span >= 0 else { return nil }
        var out = span / stride + 1
        if ceil && span % stride != 0 {
            out += 1
            // The last window must start inside the input or the leading padding.
            if (out - 1) * stride >= size + padBegin { out -= 1 }
        }
        return out
    }
}

/// conv2d: dense convolutions run on the direct kernel (DirectConv.swift); grouped ones via
/// im2col + sgemm, images split across threads (each with its own column buffer). Gradients:
/// stride-1 dW by shifted GEMMs (Conv2d+Shifted.swift), stride-1 dX as a direct convolution of
/// dY with the flipped weights, everything else im2col/col2im.
public enum Conv2d {
    /// The direct and shifted kernels are used unless a caller passes `allowFast: false` (tests
    /// comparing them with the reference im2col path).
    public static let useFast = true

    /// Unfolds image `x` [C, H, W] into columns [C·kh·kw, Ho·Wo].
    @usableFromInline
    static func im2col(
        _ x: UnsafePointer<Float>, c: Int, h: Int, w: Int, _ g: Window, ho: Int, wo: Int, _ col: UnsafeMutablePointer<Float>,
        rowStride: Int? = nil
    ) {
        let ld = rowStride ?? ho * wo
        let (kh, kw) = g.kernel
        var row = 0
        for ch in 0..<c {
            let plane = x + ch * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let dst = col + row * ld
                    let offH = ki * g.dilation.h - g.pads[0]
                    let offW = kj * g.dilation.w - g.pads[1]
                    for oi in 0..<ho {
                        let ii = oi * g.stride.h + offH
                        let line = dst + oi * wo
                        if ii < 0 || ii >= h {
                            line.update(repeating: 0, count: wo)
                            continue
                        }
                        let src = plane + ii * w
                        if g.stride.w == 1 {
                            // Contiguous run: zero the padded edges, copy the middle (plain loops
                            // vectorise; a memmove call per 28-float row costs more than the copy).
                            let lo = min(wo, max(0, -offW))
                            let hi = max(lo, min(wo, w - offW))
                            for oj in 0..<lo { line[oj] = 0 }
                            let s0 = src + offW
                            for oj in lo..<hi { line[oj] = s0[oj] }
                            for oj in hi..<wo { line[oj] = 0 }
                        } else {
                            for oj in 0..<wo {
                                let jj = oj * g.stride.w + offW
                                line[oj] = jj >= 0 && jj < w ? src[jj] : 0
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// Folds columns back, accumulating into image `dx` [C, H, W] (which the caller zeroes).
    @usableFromInline
    static func col2im(
        _ col: UnsafePointer<Float>, c: Int, h: Int, w: Int, _ g: Window, ho: Int, wo: Int, _ dx: UnsafeMutablePointer<Float>,
        rowStride: Int? = nil
    ) {
        let ld = rowStride ?? ho * wo
        let (kh, kw) = g.kernel
        var row = 0
        for ch in 0..<c {
            let plane = dx + ch * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let src = col + row * ld
                    let offH = ki * g.dilation.h - g.pads[0]
                    let offW = kj * g.dilation.w - g.pads[1]
                    for oi in 0..<ho {
                        let ii = oi * g.stride.h + offH
                        if ii < 0 || ii >= h { continue }
                        let line = plane + ii * w
                        let s = src + oi * wo
                        if g.stride.w == 1 {
                            let lo = min(wo, max(0, -offW))
                            let hi = max(lo, min(wo, w - offW))
                            let l0 = line + offW
                            for oj in lo..<hi { l0[oj] += s[oj] }
                        } else {
                            for oj in 0..<wo {
                                let jj = oj * g.stride.w + offW
                                if jj >= 0 && jj < w { line[jj] += s[oj] }
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    static func isPointwise(_ g: Window) -> Bool {
        g.kernel == (1, 1) && g.stride == (1, 1) && g.pads == [0, 0, 0, 0]
    }

    public static func outputShape(x: [Int], weight: [Int], _ g: Window, groups: Int) throws -> [Int] {
        guard x.count == 4, weight.count == 4, x[1] == weight[1] * groups, weight[0] % groups == 0 else {
            throw TensorError("conv2d input \(x) does not match weight \(weight) with groups \(groups)")
        }
        guard (weight[2], weight[3]) == g.kernel else { throw TensorError("conv2d weight \(weight) vs kernel \(g.kernel)") }
        return [x[0], weight[0], try g.outputSize(x[2], axis: 0), try g.outputSize(x[3], axis: 1)]
    }

    /// Images per GEMM: enough columns to keep the small-channel GEMMs efficient, while the
    /// column buffer (kk × images × Ho·Wo floats) stays around 1 MiB.
    static func imagesPerChunk(kk: Int, hw: Int) -> Int { max(1, min(16, (1 << 18) / max(1, kk * hw))) }

    public static func forward(
        x: Tensor, weight: Tensor, bias: Tensor?, _ g: Window, groups: Int, allowFast: Bool = useFast
    ) throws -> Tensor {
        let os = try outputShape(x: x.shape, weight: weight.shape, g, groups: groups)
        if allowFast && Depthwise.applies(input: x.shape, weight: weight.shape, groups: groups) {
            return try Depthwise.forward(x: x, weight: weight, bias: bias, g)
        }
        if allowFast && DirectConv.applies(groups: groups) {
            // The direct kernel (DirectConv.swift) through NCHW: its blocked layout in and out costs
            // two copies, far less than the GEMM paths' column matrices at the zoo's channel counts.
            let conv = DirectConv(weight: weight, bias: bias, window: g, inBlock: DirectConv.inBlock(forChannels: x.shape[1]))
            return try conv(plain: x).plain()
        }
        if allowFast && shiftedApplies(g, groups: groups) { return forwardShifted(x: x, weight: weight, bias: bias, g, output: os) }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (os[1], os[2], os[3])
        let hw = ho * wo
        let cg = c / groups
        let og = o / groups
        let kk = cg * g.kernel.h * g.kernel.w
        let y = Tensor(uninitialized: os)
        let pointwise = isPointwise(g)
        let chunk = pointwise ? 1 : imagesPerChunk(kk: kk, hw: hw)
        let xp = x.pointer
        let wp = weight.pointer
        let yp = y.pointer
        // Fewer images than workers (batch 1): the spare workers split each GEMM's rows instead.
        let gemmThreads = n < Parallel.threads ? Parallel.threads : 1
        Parallel.chunks(n) { _, images in
            let col = pointwise ? nil : Tensor(uninitialized: [kk * chunk * hw])
            let out = chunk > 1 ? Tensor(uninitialized: [og * chunk * hw]) : nil
            var first = images.lowerBound
            while first < images.upperBound {
                let count = min(chunk, images.upperBound - first)
                let cols = count * hw
                for gi in 0..<groups {
                    let src: UnsafePointer<Float>
                    if let col {
                        for b in 0..<count {
                            im2col(
                                xp + ((first + b) * c + gi * cg) * h * w, c: cg, h: h, w: w, g, ho: ho, wo: wo, col.pointer + b * hw,
                                rowStride: cols)
                        }
                        src = UnsafePointer(col.pointer)
                    } else {
                        src = UnsafePointer(xp + (first * c + gi * cg) * h * w)
                    }
                    let dst = out?.pointer ?? yp + (first * o + gi * og) * hw
                    BLAS.gemm(
                        m: og, n: cols, k: kk, a: wp + gi * og * kk, lda: kk, b: src, ldb: cols, c: dst, ldc: cols, threads: gemmThreads)
                    if let out {
                        // [og, count·hw] → NCHW
                        for b in 0..<count {
                            for oc in 0..<og {
                                (yp + ((first + b) * o + gi * og + oc) * hw).update(from: out.pointer + oc * cols + b * hw, count: hw)
                            }
                        }
                    }
                }
                if let bias {
                    for i in first..<(first + count) {
                        for oc in 0..<o {
                            let plane = yp + (i * o + oc) * hw
                            let bv = bias.pointer[oc]
                            for j in 0..<hw { plane[j] += bv }
                        }
                    }
                }
                first += count
            }
        }
        return y
    }

    /// Gradients with respect to x (when `needInput`), weight and bias. Per-thread weight
    /// gradients are summed in thread order, so results depend only on the thread count.
    public static func backward(
        dy: Tensor, x: Tensor, weight: Tensor, hasBias: Bool, _ g: Window, groups: Int, needInput: Bool, allowFast: Bool = useFast
    ) -> (dx: Tensor?, dw: Tensor, db: Tensor?) {
        if allowFast && Depthwise.applies(input: x.shape, weight: weight.shape, groups: groups) {
            return Depthwise.backward(dy: dy, x: x, weight: weight, hasBias: hasBias, g, needInput: needInput)
        }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (dy.shape[1], dy.shape[2], dy.shape[3])
        let hw = ho * wo
        let cg = c / groups
        let og = o / groups
        let kk = cg * g.kernel.h * g.kernel.w
        let pointwise = isPointwise(g)
        if allowFast && shiftedApplies(g, groups: groups) && (!needInput || transposedGradientApplies(g)) {
            // No column matrix at all: dW by shifted GEMMs, dX by the transposed convolution.
            let dw = weightGradientShifted(dy: dy, x: x, g)
            let dx =
                needInput
                ? inputGradientByConvolution(dy: dy, weight: weight, g, groups: groups, inputChannels: c, allowFast: true) : nil
            return (dx, dw, hasBias ? biasGradient(dy) : nil)
        }
        let chunk = pointwise ? 1 : imagesPerChunk(kk: kk, hw: hw)
        // Stride-1 convolutions get dX as a convolution of dY with the flipped, transposed weights:
        // im2col + a wide GEMM instead of a tall GEMM + col2im's scattered adds (less memory traffic).
        let transposed = needInput && !pointwise && transposedGradientApplies(g)
        let dx = needInput && !transposed ? Tensor(zeros: x.shape) : nil
        let parts = max(1, min(Parallel.threads, n))
        let partial = (0..<parts).map { _ in Tensor(zeros: weight.shape) }
        let xp = x.pointer
        let wp = weight.pointer
        let dyp = dy.pointer
        Parallel.chunks(n, parts: parts) { part, images in
            let col = Tensor(uninitialized: [kk * chunk * hw])
            let dyc = chunk > 1 ? Tensor(uninitialized: [og * chunk * hw]) : nil
            let dw = partial[part].pointer
            var first = images.lowerBound
            while first < images.upperBound {
                let count = min(chunk, images.upperBound - first)
                let cols = count * hw
                for gi in 0..<groups {
                    // dY of the chunk as [og, count·hw]
                    let dys: UnsafePointer<Float>
                    if let dyc {
                        for b in 0..<count {
                            for oc in 0..<og {
                                (dyc.pointer + oc * cols + b * hw).update(from: dyp + ((first + b) * o + gi * og + oc) * hw, count: hw)
                            }
                        }
                        dys = UnsafePointer(dyc.pointer)
                    } else {
                        dys = UnsafePointer(dyp + (first * o + gi * og) * hw)
                    }
                    let src: UnsafePointer<Float>
                    if pointwise {
                        src = UnsafePointer(xp + (first * c + gi * cg) * h * w)
                    } else {
                        for b in 0..<count {
                            im2col(
                                xp + ((first + b) * c + gi * cg) * h * w, c: cg, h: h, w: w, g, ho: ho, wo: wo, col.pointer + b * hw,
                                rowStride: cols)
                        }
                        src = UnsafePointer(col.pointer)
                    }
                    // dW_g += dY_g · colᵀ
                    BLAS.gemm(
                        transB: true, m: og, n: kk, k: cols, a: dys, lda: cols, b: src, ldb: cols, beta: 1, c: dw + gi * og * kk, ldc: kk,
                        threads: 1)
                    guard let dx else { continue }
                    if pointwise {
                        BLAS.gemm(
                            transA: true, m: kk, n: cols, k: og, a: wp + gi * og * kk, lda: kk, b: dys, ldb: cols,
                            c: dx.pointer + (first * c + gi * cg) * h * w, ldc: cols, threads: 1)
                    } else {
                        BLAS.gemm(
                            transA: true, m: kk, n: cols, k: og, a: wp + gi * og * kk, lda: kk, b: dys, ldb: cols, c: col.pointer,
                            ldc: cols,
                            threads: 1)
                        for b in 0..<count {
                            col2im(
                                col.pointer + b * hw, c: cg, h: h, w: w, g, ho: ho, wo: wo,
                                dx.pointer + ((first + b) * c + gi * cg) * h * w,
                                rowStride: cols)
                        }
                    }
                }
                first += count
            }
        }
        let dw = partial[0]
        for p in partial.dropFirst() { for j in 0..<dw.count { dw.pointer[j] += p.pointer[j] } }
        var dxOut = dx
        if transposed {
            dxOut = inputGradientByConvolution(dy: dy, weight: weight, g, groups: groups, inputChannels: c, allowFast: allowFast)
        }
        let db = hasBias ? biasGradient(dy) : nil
        return (dxOut, dw, db)
    }

    static func biasGradient(_ dy: Tensor) -> Tensor {
        let (n, o) = (dy.shape[0], dy.shape[1])
        let hw = dy.count / max(1, n * o)
        let b = Tensor(zeros: [o])
        for i in 0..<n { for oc in 0..<o { b.pointer[oc] += Reduce.sum(dy.pointer + (i * o + oc) * hw, hw) } }
        return b
    }

    /// dX as the convolution of dY with the flipped, transposed weights (stride 1 only).
    static func inputGradientByConvolution(
        dy: Tensor, weight: Tensor, _ g: Window, groups: Int, inputChannels c: Int, allowFast: Bool
    ) -> Tensor? {
        let (kh, kw) = g.kernel
        let o = weight.shape[0]
        let og = o / groups
        let cg = c / groups
        let wp = weight.pointer
        let flipped = Tensor(uninitialized: [c, og, kh, kw])
        for gi in 0..<groups {
            for oc in 0..<og {
                for ic in 0..<cg {
                    for ki in 0..<kh {
                        for kj in 0..<kw {
                            flipped.pointer[(((gi * cg + ic) * og + oc) * kh + kh - 1 - ki) * kw + kw - 1 - kj] =
                                wp[(((gi * og + oc) * cg + ic) * kh + ki) * kw + kj]
                        }
                    }
                }
            }
        }
        let p = g.pads
        let back = Window(kernel: [kh, kw], stride: [1, 1], pads: [kh - 1 - p[0], kw - 1 - p[1], kh - 1 - p[2], kw - 1 - p[3]])
        return try? forward(x: dy, weight: flipped, bias: nil, back, groups: groups, allowFast: allowFast)
    }

    /// dX by convolution needs stride 1, no dilation and padding below the kernel size.
    static func transposedGradientApplies(_ g: Window) -> Bool {
        g.stride == (1, 1) && g.dilation == (1, 1) && g.pads[0] < g.kernel.h && g.pads[2] < g.kernel.h && g.pads[1] < g.kernel.w
            && g.pads[3] < g.kernel.w
    }
}
