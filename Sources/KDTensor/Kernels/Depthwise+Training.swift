/// The backward pass of the channel-blocked depthwise convolution (one filter per channel), for
/// training on the layout the rest of the network's values already have: eight channels of a pixel
/// are one vector, so every tap is a vector multiply-add with no gather, and no value goes through
/// NCHW on its way between the pointwise convolutions around it.
///
/// Per block and image, while its planes are in cache:
/// - dw: per tap, the sum over images and pixels of dy · x, in vector accumulators per block (one
///   block per worker, images in order, so the sum does not depend on the thread count; a 3 × 3
///   kernel's nine stay in registers).
/// - dx: each output pixel's gradient vector times each tap's filter vector, added into the input
///   pixel the tap read (a scatter over the padded input; the halo, which stood for zero padding,
///   is cleared afterwards). A 3 × 3 kernel at stride 1 with padding 1 gathers instead: each input
///   pixel reads the nine dy pixels (dy's zero halo stands for the borders) and adds them in the
///   scatter's order, so the bits are the scatter's, without its read-modify-write of dx.
extension Depthwise {
    public static func blockedBackward(dy: BlockedTensor, x: BlockedTensor, weight: Tensor, _ g: Window, hasBias: Bool, needInput: Bool)
        -> (dx: BlockedTensor?, dw: Tensor, db: Tensor?)
    {
        typealias V8 = SIMD8<Float>
        precondition(blockedApplies(x, weight: weight.shape, g) && dy.channels == x.channels && dy.n == x.n)
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }
        @inline(__always) func store(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
            UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
        }
        let (kh, kw) = g.kernel
        let taps = kh * kw
        let (sh, sw, dh, dwl) = (g.stride.h, g.stride.w, g.dilation.h, g.dilation.w)
        let (ho, wo) = (dy.h, dy.w)
        let blocks = x.blocks
        let xs = x.rowStride
        // Tap t of output pixel (oi, oj) reads input pixel (oi·sh − p0 + ki·dh, oj·sw − p1 + kj·dw):
        // its offset from the input row base of (oi, oj), in floats.
        let tapOffsets = (0..<taps).map { t in (t / kw) * dh * xs + (t % kw) * dwl * 8 }
        let dwPacked = Tensor(zeros: [blocks * taps * 8])
        let dbPacked = Tensor(zeros: [blocks * 8])
        // Filters as [block][tap][8] (the forward's packing), for dx; zero past the channels.
        let filters = Tensor(zeros: [blocks * taps * 8])
        for c in 0..<x.channels {
            for k in 0..<taps { filters[((c / 8) * taps + k) * 8 + c % 8] = weight[c * taps + k] }
        }
        let work = x.n * blocks * ho * wo * taps > 1 << 14
        // 3 × 3 undilated: dW's nine accumulators in registers. At stride 1 with padding 1 and a
        // zero halo around dy, dx is a gather instead: each input pixel reads the nine dy pixels
        // its taps fed, with the scatter's additions in the scatter's order (the same bits).
        let three = kh == 3 && kw == 3 && dh == 1 && dwl == 1
        let gathers = needInput && three && sh == 1 && sw == 1 && g.pads == [1, 1, 1, 1] && dy.pad >= 1
        let t =
            needInput
            ? gathers
                ? BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad)
                : BlockedTensor(zeros: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad)
            : nil
        // One pass over dy: a worker takes whole blocks, images in order, and for each output pixel
        // adds into dx's taps and the filter gradient's accumulators.
        tapOffsets.withUnsafeBufferPointer { offsets in
            let offsets = UncheckedSendable(offsets.baseAddress!)
            Parallel.chunks(blocks, parts: work ? Parallel.threads : 1) { _, range in
                let acc = UnsafeMutablePointer<V8>.allocate(capacity: taps)
                defer { acc.deallocate() }
                for blk in range {
                    acc.initialize(repeating: V8(), count: taps)
                    var bias = V8()
                    let filt = filters.pointer + blk * taps * 8
                    for img in 0..<x.n {
                        let plane = img * blocks + blk
                        let gsrc = dy.origin + plane * dy.planeStride
                        let src = x.data.pointer + plane * x.planeStride
                        let dst = t.map { $0.data.pointer + plane * $0.planeStride }
                        if three {
                            var (a0, a1, a2, a3, a4, a5, a6, a7, a8) = (
                                acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8]
                            )
                            for oi in 0..<ho {
                                let row = (oi * sh - g.pads[0] + x.pad) * xs + (x.pad - g.pads[1]) * 8
                                for oj in 0..<wo {
                                    let v = load(gsrc + oi * dy.rowStride + oj * 8)
                                    bias += v
                                    let p = src + row + oj * sw * 8
                                    let (q, r) = (p + xs, p + 2 * xs)
                                    a0 += v * load(p)
                                    a1 += v * load(p + 8)
                                    a2 += v * load(p + 16)
                                    a3 += v * load(q)
                                    a4 += v * load(q + 8)
                                    a5 += v * load(q + 16)
                                    a6 += v * load(r)
                                    a7 += v * load(r + 8)
                                    a8 += v * load(r + 16)
                                }
                            }
                            (acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8]) = (a0, a1, a2, a3, a4, a5, a6, a7, a8)
                        } else {
                            for oi in 0..<ho {
                                let row = (oi * sh - g.pads[0] + x.pad) * xs + (x.pad - g.pads[1]) * 8
                                for oj in 0..<wo {
                                    let v = load(gsrc + oi * dy.rowStride + oj * 8)
                                    bias += v
                                    let at = row + oj * sw * 8
                                    for k in 0..<taps { acc[k] += v * load(src + at + offsets.value[k]) }
                                }
                            }
                        }
                        guard let dst else { continue }
                        if gathers {
                            // Input pixel (i, j) took tap (ki, kj) from output pixel (i + 1 − ki,
                            // j + 1 − kj): the scatter added them in output order, taps 8 down to 0.
                            let (f0, f1, f2) = (load(filt), load(filt + 8), load(filt + 16))
                            let (f3, f4, f5) = (load(filt + 24), load(filt + 32), load(filt + 40))
                            let (f6, f7, f8) = (load(filt + 48), load(filt + 56), load(filt + 64))
                            let dr = dy.rowStride
                            let out = dst + x.pad * xs + x.pad * 8
                            for i in 0..<x.h {
                                for j in 0..<x.w {
                                    let c = gsrc + i * dr + j * 8
                                    var a = V8()
                                    a = a + load(c - dr - 8) * f8
                                    a = a + load(c - dr) * f7
                                    a = a + load(c - dr + 8) * f6
                                    a = a + load(c - 8) * f5
                                    a = a + load(c) * f4
                                    a = a + load(c + 8) * f3
                                    a = a + load(c + dr - 8) * f2
                                    a = a + load(c + dr) * f1
                                    a = a + load(c + dr + 8) * f0
                                    store(a, out + i * xs + j * 8)
                                }
                            }
                            continue
                        }
                        for oi in 0..<ho {
                            let row = (oi * sh - g.pads[0] + x.pad) * xs + (x.pad - g.pads[1]) * 8
                            for oj in 0..<wo {
                                let v = load(gsrc + oi * dy.rowStride + oj * 8)
                                let at = row + oj * sw * 8
                                for k in 0..<taps {
                                    let q = dst + at + offsets.value[k]
                                    store(load(q) + v * load(filt + k * 8), q)
                                }
                            }
                        }
                    }
                    for k in 0..<taps { store(acc[k], dwPacked.pointer + (blk * taps + k) * 8) }
                    store(bias, dbPacked.pointer + blk * 8)
                }
            }
        }
        if !gathers { t?.zeroHalo() }
        let dx = t
        // Back to [C, 1, kh, kw] and [C].
        let dwOut = Tensor(uninitialized: weight.shape)
        for c in 0..<x.channels {
            for k in 0..<taps { dwOut[c * taps + k] = dwPacked[((c / 8) * taps + k) * 8 + c % 8] }
        }
        var db: Tensor?
        if hasBias {
            let b = Tensor(uninitialized: [x.channels])
            for c in 0..<x.channels { b[c] = dbPacked[c] }
            db = b
        }
        return (dx, dwOut, db)
    }
}
