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

    public static func forward(x: Tensor, weight: Tensor, bias: Tensor?, _ g: Window, relu: Bool = false, activation: Activation? = nil)
        throws -> Tensor
    {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        guard applies(input: x.shape, weight: weight.shape, groups: c), (weight.shape[2], weight.shape[3]) == g.kernel else {
            throw TensorError("depthwise conv2d: input \(x.shape) does not match weight \(weight.shape)")
        }
        let o = weight.shape[0]
        let m = o / c
        let (ho, wo) = (try g.outputSize(h, axis: 0), try g.outputSize(w, axis: 1))
        let y = Tensor(uninitialized: [n, o, ho, wo])
        let (kh, kw) = g.kernel
        let cols = (0..<kw).map { columns(kj: $0, g, w: w, wo: wo) }
        let (sh, sw) = (g.stride.h, g.stride.w)
        Parallel.chunks(n * o, parts: n * o * ho * wo > 1 << 12 ? Parallel.threads : 1) { _, planes in
            for p in planes {
                let (img, oc) = (p / o, p % o)
                let src = x.pointer + (img * c + oc / m) * h * w
                let dst = y.pointer + p * ho * wo
                let filt = weight.pointer + oc * kh * kw
                let b = bias?.pointer[oc] ?? 0
                for oi in 0..<ho {
                    let row = dst + oi * wo
                    for j in 0..<wo { row[j] = b }
                    for ki in 0..<kh {
                        let ii = oi * sh - g.pads[0] + ki * g.dilation.h
                        if ii < 0 || ii >= h { continue }
                        let line = src + ii * w
                        for kj in 0..<kw {
                            let wv = filt[ki * kw + kj]
                            let r = cols[kj]
                            let shift = kj * g.dilation.w - g.pads[1]
                            if sw == 1 {
                                let s = line + shift
                                for j in r { row[j] += wv * s[j] }
                            } else {
                                for j in r { row[j] += wv * line[j * sw + shift] }
                            }
                        }
                    }
                    if relu {
                        for j in 0..<wo { row[j] = max(row[j], 0) }
                    } else if let activation {
                        activation.forward(row, row, count: wo)
                    }
                }
            }
        }
        return y
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
