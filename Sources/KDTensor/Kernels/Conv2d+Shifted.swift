/// Stride-1 convolution without a column matrix: the input chunk is copied once into a zero-padded
/// buffer, and each kernel offset (ki, kj) is a GEMM of that offset's weights with the buffer
/// shifted by ki·Wp + kj, accumulated into an output over the padded grid. The extra outputs at
/// the padded borders are computed and dropped; the saved memory traffic of im2col (kh·kw copies
/// of the input) is worth more at the 16–64 channels of the zoo.
extension Conv2d {
    static func shiftedApplies(_ g: Window, groups: Int) -> Bool {
        g.stride == (1, 1) && g.dilation == (1, 1) && groups == 1 && g.kernel.h * g.kernel.w > 1
    }

    static func forwardShifted(x: Tensor, weight: Tensor, bias: Tensor?, _ g: Window, output os: [Int]) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (os[1], os[2], os[3])
        let (kh, kw) = g.kernel
        let hp = h + g.pads[0] + g.pads[2]
        let wp = w + g.pads[1] + g.pads[3]
        let plane = hp * wp
        let tail = (kh - 1) * wp + (kw - 1)
        // Weights per kernel offset: [kh·kw][O, C] contiguous.
        let packed = Tensor(uninitialized: [kh * kw, o, c])
        for oc in 0..<o {
            for ic in 0..<c {
                for k in 0..<(kh * kw) { packed[(k * o + oc) * c + ic] = weight[(oc * c + ic) * kh * kw + k] }
            }
        }
        let chunk = max(1, min(8, (1 << 17) / max(1, o * plane)))
        let y = Tensor(uninitialized: os)
        let xp = x.pointer
        let yp = y.pointer
        let gemmThreads = n < Parallel.threads ? Parallel.threads : 1
        Parallel.chunks(n) { _, images in
            let cols = chunk * plane
            let stride = cols + tail
            let padded = Tensor(uninitialized: [c * stride])
            let full = Tensor(uninitialized: [o * cols])
            var first = images.lowerBound
            while first < images.upperBound {
                let count = min(chunk, images.upperBound - first)
                let ncols = count * plane
                fillPadded(padded, from: xp, first: first, count: count, c: c, h: h, w: w, g, wp: wp, plane: plane, stride: stride)
                for k in 0..<(kh * kw) {
                    let (ki, kj) = (k / kw, k % kw)
                    BLAS.gemm(
                        m: o, n: ncols, k: c, a: packed.pointer + k * o * c, lda: c, b: padded.pointer + ki * wp + kj, ldb: stride,
                        beta: k == 0 ? 0 : 1, c: full.pointer, ldc: ncols, threads: gemmThreads)
                }
                for b in 0..<count {
                    for oc in 0..<o {
                        let src = full.pointer + oc * ncols + b * plane
                        let dst = yp + ((first + b) * o + oc) * ho * wo
                        let bv = bias?[oc] ?? 0
                        for i in 0..<ho {
                            let s = src + i * wp
                            let d = dst + i * wo
                            for j in 0..<wo { d[j] = s[j] + bv }
                        }
                    }
                }
                first += count
            }
        }
        return y
    }

    /// Zero-padded copy of `count` images: padded[c][b·plane + (i + p0)·wp + (j + p1)] = x[first + b, c, i, j].
    static func fillPadded(
        _ padded: Tensor, from xp: UnsafePointer<Float>, first: Int, count: Int, c: Int, h: Int, w: Int, _ g: Window, wp: Int, plane: Int,
        stride: Int
    ) {
        padded.fill(0)
        for ch in 0..<c {
            let dstC = padded.pointer + ch * stride
            for b in 0..<count {
                let src = xp + ((first + b) * c + ch) * h * w
                let dst = dstC + b * plane + g.pads[0] * wp + g.pads[1]
                for i in 0..<h {
                    let s = src + i * w
                    let d = dst + i * wp
                    for j in 0..<w { d[j] = s[j] }
                }
            }
        }
    }

    /// dW for a stride-1 convolution: for each kernel offset, dW_k = dY (placed on the padded grid,
    /// zero elsewhere) · (padded input shifted by the offset)ᵀ — one GEMM with the whole chunk as
    /// its inner dimension. Per-thread partial sums are added in thread order (deterministic).
    static func weightGradientShifted(dy: Tensor, x: Tensor, _ g: Window) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, ho, wo) = (dy.shape[1], dy.shape[2], dy.shape[3])
        let (kh, kw) = g.kernel
        let hp = h + g.pads[0] + g.pads[2]
        let wp = w + g.pads[1] + g.pads[3]
        let plane = hp * wp
        let tail = (kh - 1) * wp + (kw - 1)
        let chunk = max(1, min(8, (1 << 17) / max(1, o * plane)))
        let parts = max(1, min(Parallel.threads, n))
        let partial = (0..<parts).map { _ in Tensor(zeros: [kh * kw, o, c]) }
        let xp = x.pointer
        let dyp = dy.pointer
        Parallel.chunks(n, parts: parts) { part, images in
            let cols = chunk * plane
            let stride = cols + tail
            let padded = Tensor(uninitialized: [c * stride])
            let grid = Tensor(uninitialized: [o * cols])
            let acc = partial[part].pointer
            var first = images.lowerBound
            while first < images.upperBound {
                let count = min(chunk, images.upperBound - first)
                let ncols = count * plane
                fillPadded(padded, from: xp, first: first, count: count, c: c, h: h, w: w, g, wp: wp, plane: plane, stride: stride)
                grid.fill(0)
                for oc in 0..<o {
                    for b in 0..<count {
                        let src = dyp + ((first + b) * o + oc) * ho * wo
                        let dst = grid.pointer + oc * ncols + b * plane
                        for i in 0..<ho {
                            let s = src + i * wo
                            let d = dst + i * wp
                            for j in 0..<wo { d[j] = s[j] }
                        }
                    }
                }
                for k in 0..<(kh * kw) {
                    let (ki, kj) = (k / kw, k % kw)
                    BLAS.gemm(
                        transB: true, m: o, n: c, k: ncols, a: grid.pointer, lda: ncols, b: padded.pointer + ki * wp + kj, ldb: stride,
                        beta: 1, c: acc + k * o * c, ldc: c, threads: 1)
                }
                first += count
            }
        }
        let sum = partial[0]
        for p in partial.dropFirst() { for j in 0..<sum.count { sum.pointer[j] += p.pointer[j] } }
        // [kh·kw, O, C] → [O, C, kh, kw]
        let dw = Tensor(uninitialized: [o, c, kh, kw])
        for k in 0..<(kh * kw) {
            for oc in 0..<o { for ic in 0..<c { dw[(oc * c + ic) * kh * kw + k] = sum[(k * o + oc) * c + ic] } }
        }
        return dw
    }
}
