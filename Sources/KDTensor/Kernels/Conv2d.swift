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

    /// Output size along one axis; with ceil mode the last window must start inside the input
    /// or its leading padding (PyTorch's rule).
    public func outputSize(_ input: Int, axis: Int) throws -> Int {
        let k = axis == 0 ? kernel.h : kernel.w
        let s = axis == 0 ? stride.h : stride.w
        let d = axis == 0 ? dilation.h : dilation.w
        let p0 = pads[axis]
        let p1 = pads[axis + 2]
        let span = input + p0 + p1 - d * (k - 1) - 1
        guard span >= 0 else { throw TensorError("window \(kernel) does not fit input size \(input) with pads \(pads)") }
        var out = (ceilMode ? (span + s - 1) / s : span / s) + 1
        if ceilMode && (out - 1) * s >= input + p0 { out -= 1 }
        return out
    }
}

/// conv2d via im2col + sgemm, images split across threads (each with its own column buffer).
public enum Conv2d {
    /// Unfolds image `x` [C, H, W] into columns [C·kh·kw, Ho·Wo].
    @usableFromInline
    static func im2col(
        _ x: UnsafePointer<Float>, c: Int, h: Int, w: Int, _ g: Window, ho: Int, wo: Int, _ col: UnsafeMutablePointer<Float>
    ) {
        let (kh, kw) = g.kernel
        var row = 0
        for ch in 0..<c {
            let plane = x + ch * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let dst = col + row * ho * wo
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
                            // Contiguous run: zero the padded edges, copy the middle.
                            let lo = max(0, -offW)
                            let hi = min(wo, w - offW)
                            if lo > 0 { line.update(repeating: 0, count: min(lo, wo)) }
                            if hi > lo { (line + lo).update(from: src + lo + offW, count: hi - lo) }
                            if hi < wo { (line + max(hi, 0)).update(repeating: 0, count: wo - max(hi, 0)) }
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
        _ col: UnsafePointer<Float>, c: Int, h: Int, w: Int, _ g: Window, ho: Int, wo: Int, _ dx: UnsafeMutablePointer<Float>
    ) {
        let (kh, kw) = g.kernel
        var row = 0
        for ch in 0..<c {
            let plane = dx + ch * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let src = col + row * ho * wo
                    let offH = ki * g.dilation.h - g.pads[0]
                    let offW = kj * g.dilation.w - g.pads[1]
                    for oi in 0..<ho {
                        let ii = oi * g.stride.h + offH
                        if ii < 0 || ii >= h { continue }
                        let line = plane + ii * w
                        let s = src + oi * wo
                        for oj in 0..<wo {
                            let jj = oj * g.stride.w + offW
                            if jj >= 0 && jj < w { line[jj] += s[oj] }
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

    public static func forward(x: Tensor, weight: Tensor, bias: Tensor?, _ g: Window, groups: Int) throws -> Tensor {
        let os = try outputShape(x: x.shape, weight: weight.shape, g, groups: groups)
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (os[1], os[2], os[3])
        let cg = c / groups
        let og = o / groups
        let kk = cg * g.kernel.h * g.kernel.w
        let y = Tensor(uninitialized: os)
        let pointwise = isPointwise(g)
        let xp = x.pointer
        let wp = weight.pointer
        let yp = y.pointer
        Parallel.chunks(n) { _, images in
            let col = pointwise ? nil : Tensor(uninitialized: [kk * ho * wo])
            for i in images {
                for gi in 0..<groups {
                    let xi = xp + (i * c + gi * cg) * h * w
                    let src: UnsafePointer<Float>
                    if let col {
                        im2col(xi, c: cg, h: h, w: w, g, ho: ho, wo: wo, col.pointer)
                        src = UnsafePointer(col.pointer)
                    } else {
                        src = UnsafePointer(xi)
                    }
                    BLAS.gemm(
                        m: og, n: ho * wo, k: kk, a: wp + gi * og * kk, lda: kk, b: src, ldb: ho * wo,
                        c: yp + (i * o + gi * og) * ho * wo, ldc: ho * wo, threads: 1)
                }
                if let bias {
                    for oc in 0..<o {
                        let plane = yp + (i * o + oc) * ho * wo
                        let b = bias.pointer[oc]
                        for j in 0..<(ho * wo) { plane[j] += b }
                    }
                }
            }
        }
        return y
    }

    /// Gradients with respect to x (when `needInput`), weight and bias. Per-thread weight
    /// gradients are summed in thread order, so results depend only on the thread count.
    public static func backward(
        dy: Tensor, x: Tensor, weight: Tensor, hasBias: Bool, _ g: Window, groups: Int, needInput: Bool
    ) -> (dx: Tensor?, dw: Tensor, db: Tensor?) {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (dy.shape[1], dy.shape[2], dy.shape[3])
        let cg = c / groups
        let og = o / groups
        let kk = cg * g.kernel.h * g.kernel.w
        let pointwise = isPointwise(g)
        let dx = needInput ? Tensor(zeros: x.shape) : nil
        let parts = max(1, min(Parallel.threads, n))
        let partial = (0..<parts).map { _ in Tensor(zeros: weight.shape) }
        let xp = x.pointer
        let wp = weight.pointer
        let dyp = dy.pointer
        Parallel.chunks(n, parts: parts) { part, images in
            let col = Tensor(uninitialized: [kk * ho * wo])
            let dw = partial[part].pointer
            for i in images {
                for gi in 0..<groups {
                    let xi = xp + (i * c + gi * cg) * h * w
                    let dyi = dyp + (i * o + gi * og) * ho * wo
                    let src: UnsafePointer<Float>
                    if pointwise {
                        src = UnsafePointer(xi)
                    } else {
                        im2col(xi, c: cg, h: h, w: w, g, ho: ho, wo: wo, col.pointer)
                        src = UnsafePointer(col.pointer)
                    }
                    // dW_g += dY_g · colᵀ
                    BLAS.gemm(
                        transB: true, m: og, n: kk, k: ho * wo, a: dyi, lda: ho * wo, b: src, ldb: ho * wo, beta: 1,
                        c: dw + gi * og * kk, ldc: kk, threads: 1)
                    guard let dx else { continue }
                    let dxi = dx.pointer + (i * c + gi * cg) * h * w
                    if pointwise {
                        BLAS.gemm(
                            transA: true, m: kk, n: ho * wo, k: og, a: wp + gi * og * kk, lda: kk, b: dyi, ldb: ho * wo,
                            c: dxi, ldc: ho * wo, threads: 1)
                    } else {
                        BLAS.gemm(
                            transA: true, m: kk, n: ho * wo, k: og, a: wp + gi * og * kk, lda: kk, b: dyi, ldb: ho * wo,
                            c: col.pointer, ldc: ho * wo, threads: 1)
                        col2im(col.pointer, c: cg, h: h, w: w, g, ho: ho, wo: wo, dxi)
                    }
                }
            }
        }
        let dw = partial[0]
        for p in partial.dropFirst() { for j in 0..<dw.count { dw.pointer[j] += p.pointer[j] } }
        var db: Tensor?
        if hasBias {
            let b = Tensor(zeros: [o])
            for i in 0..<n {
                for oc in 0..<o {
                    let plane = dyp + (i * o + oc) * ho * wo
                    var s: Float = 0
                    for j in 0..<(ho * wo) { s += plane[j] }
                    b.pointer[oc] += s
                }
            }
            db = b
        }
        return (dx, dw, db)
    }
}
