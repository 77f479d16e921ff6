/// Max, average and global-average pooling over NCHW, parallel over (image, channel) planes.
public enum Pooling {
    static func outputShape(_ x: [Int], _ g: Window) throws -> [Int] {
        guard x.count == 4 else { throw TensorError("pooling expects NCHW input, got \(x)") }
        return [x[0], x[1], try g.outputSize(x[2], axis: 0), try g.outputSize(x[3], axis: 1)]
    }

    /// Max pooling; `argmax` holds, per output, the flat input index within its plane (−1 if the
    /// window saw only padding).
    public static func maxForward(_ x: Tensor, _ g: Window) throws -> (y: Tensor, argmax: [Int32]) {
        let os = try outputShape(x.shape, g)
        let (h, w, ho, wo) = (x.shape[2], x.shape[3], os[2], os[3])
        let planes = os[0] * os[1]
        let y = Tensor(uninitialized: os)
        var argmax = [Int32](repeating: -1, count: y.count)
        argmax.withUnsafeMutableBufferPointer { am in
            let amp = am.baseAddress!
            Parallel.chunks(planes) { _, range in
                for p in range {
                    let src = x.pointer + p * h * w
                    let dst = y.pointer + p * ho * wo
                    let idx = amp + p * ho * wo
                    for oi in 0..<ho {
                        for oj in 0..<wo {
                            var best = -Float.infinity
                            var at: Int32 = -1
                            for ki in 0..<g.kernel.h {
                                let ii = oi * g.stride.h - g.pads[0] + ki * g.dilation.h
                                if ii < 0 || ii >= h { continue }
                                for kj in 0..<g.kernel.w {
                                    let jj = oj * g.stride.w - g.pads[1] + kj * g.dilation.w
                                    if jj < 0 || jj >= w { continue }
                                    let v = src[ii * w + jj]
                                    if v > best || at < 0 || v.isNaN {
                                        best = v
                                        at = Int32(ii * w + jj)
                                    }
                                }
                            }
                            dst[oi * wo + oj] = best
                            idx[oi * wo + oj] = at
                        }
                    }
                }
            }
        }
        return (y, argmax)
    }

    /// Max pooling without the argmax record (inference): window bounds hoisted out of the loops,
    /// and a branch-free path for the common 2×2 stride-2 unpadded window. Same values (NaN wins) as `maxForward`.
    public static func maxForwardInference(_ x: Tensor, _ g: Window) throws -> Tensor {
        let os = try outputShape(x.shape, g)
        let (h, w, ho, wo) = (x.shape[2], x.shape[3], os[2], os[3])
        let planes = os[0] * os[1]
        let y = Tensor(uninitialized: os)
        let (kh, kw, sh, sw, dh, dw) = (g.kernel.h, g.kernel.w, g.stride.h, g.stride.w, g.dilation.h, g.dilation.w)
        let (pt, pl) = (g.pads[0], g.pads[1])
        let simple = kh == 2 && kw == 2 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && pt == 0 && pl == 0 && 2 * ho <= h && 2 * wo <= w
        let xp = x.pointer
        let yp = y.pointer
        Parallel.chunks(planes) { _, range in
            for p in range {
                let src = xp + p * h * w
                let dst = yp + p * ho * wo
                if simple {
                    for oi in 0..<ho {
                        let r0 = src + 2 * oi * w
                        let r1 = r0 + w
                        let o = dst + oi * wo
                        for oj in 0..<wo {
                            let a = r0[2 * oj]
                            let b = r0[2 * oj + 1]
                            let c = r1[2 * oj]
                            let d = r1[2 * oj + 1]
                            let m = Swift.max(Swift.max(a, b), Swift.max(c, d))
                            o[oj] = (a.isNaN || b.isNaN || c.isNaN || d.isNaN) ? .nan : m
                        }
                    }
                    continue
                }
                for oi in 0..<ho {
                    for oj in 0..<wo {
                        var best = -Float.infinity
                        var seen = false
                        for ki in 0..<kh {
                            let ii = oi * sh - pt + ki * dh
                            if ii < 0 || ii >= h { continue }
                            for kj in 0..<kw {
                                let jj = oj * sw - pl + kj * dw
                                if jj < 0 || jj >= w { continue }
                                let v = src[ii * w + jj]
                                if v > best || !seen || v.isNaN {
                                    best = v
                                    seen = true
                                }
                                if v.isNaN { break }
                            }
                        }
                        dst[oi * wo + oj] = best
                    }
                }
            }
        }
        return y
    }

    public static func maxBackward(dy: Tensor, argmax: [Int32], inputShape: [Int]) -> Tensor {
        let dx = Tensor(zeros: inputShape)
        let hw = inputShape[2] * inputShape[3]
        let ohw = dy.shape[2] * dy.shape[3]
        let planes = dy.shape[0] * dy.shape[1]
        argmax.withUnsafeBufferPointer { am in
            Parallel.chunks(planes) { _, range in
                for p in range {
                    for j in 0..<ohw {
                        let a = am[p * ohw + j]
                        if a >= 0 { dx.pointer[p * hw + Int(a)] += dy.pointer[p * ohw + j] }
                    }
                }
            }
        }
        return dx
    }

    /// Average pooling with PyTorch's divisor rules (count_include_pad counts padding inside the
    /// padded bounds only).
    public static func avgForward(_ x: Tensor, _ g: Window, countIncludePad: Bool) throws -> Tensor {
        let os = try outputShape(x.shape, g)
        let y = Tensor(uninitialized: os)
        avgVisit(inputShape: x.shape, outputShape: os, g, countIncludePad: countIncludePad) { p, out, inIndex, scale in
            if inIndex < 0 {
                y.pointer[p * os[2] * os[3] + out] = 0
            } else {
                y.pointer[p * os[2] * os[3] + out] += x.pointer[p * x.shape[2] * x.shape[3] + inIndex] * scale
            }
        }
        return y
    }

    public static func avgBackward(dy: Tensor, inputShape: [Int], _ g: Window, countIncludePad: Bool) -> Tensor {
        let dx = Tensor(zeros: inputShape)
        let (h, w) = (inputShape[2], inputShape[3])
        let ohw = dy.shape[2] * dy.shape[3]
        avgVisit(inputShape: inputShape, outputShape: dy.shape, g, countIncludePad: countIncludePad) { p, out, inIndex, scale in
            if inIndex >= 0 { dx.pointer[p * h * w + inIndex] += dy.pointer[p * ohw + out] * scale }
        }
        return dx
    }

    /// Calls `body(plane, outIndex, -1, 0)` once per output (to reset it), then
    /// `body(plane, outIndex, inIndex, 1/divisor)` for each input it averages.
    private static func avgVisit(
        inputShape: [Int], outputShape os: [Int], _ g: Window, countIncludePad: Bool,
        _ body: (Int, Int, Int, Float) -> Void
    ) {
        let (h, w, ho, wo) = (inputShape[2], inputShape[3], os[2], os[3])
        Parallel.chunks(os[0] * os[1]) { _, range in
            for p in range {
                for oi in 0..<ho {
                    for oj in 0..<wo {
                        var hs = oi * g.stride.h - g.pads[0]
                        var ws = oj * g.stride.w - g.pads[1]
                        var he = min(hs + g.kernel.h, h + g.pads[2])
                        var we = min(ws + g.kernel.w, w + g.pads[3])
                        let padded = (he - hs) * (we - ws)
                        hs = max(hs, 0)
                        ws = max(ws, 0)
                        he = min(he, h)
                        we = min(we, w)
                        let divisor = countIncludePad ? padded : (he - hs) * (we - ws)
                        let out = oi * wo + oj
                        body(p, out, -1, 0)
                        if divisor <= 0 { continue }
                        let scale = 1 / Float(divisor)
                        for ii in hs..<max(hs, he) { for jj in ws..<max(ws, we) { body(p, out, ii * w + jj, scale) } }
                    }
                }
            }
        }
    }

    public static func globalAvgForward(_ x: Tensor) throws -> Tensor {
        guard x.rank == 4 else { throw TensorError("globalavgpool expects NCHW input, got \(x.shape)") }
        let hw = x.shape[2] * x.shape[3]
        let y = Tensor(uninitialized: [x.shape[0], x.shape[1], 1, 1])
        let inv = 1 / Float(hw)
        for p in 0..<(x.shape[0] * x.shape[1]) {
            var s: Float = 0
            let src = x.pointer + p * hw
            for j in 0..<hw { s += src[j] }
            y.pointer[p] = s * inv
        }
        return y
    }

    public static func globalAvgBackward(dy: Tensor, inputShape: [Int]) -> Tensor {
        let hw = inputShape[2] * inputShape[3]
        let dx = Tensor(uninitialized: inputShape)
        let inv = 1 / Float(hw)
        for p in 0..<(inputShape[0] * inputShape[1]) {
            (dx.pointer + p * hw).update(repeating: dy.pointer[p] * inv, count: hw)
        }
        return dx
    }
}
