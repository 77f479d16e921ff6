/// The backward pass of the channel-blocked depthwise convolution (one filter per channel), for
/// training on the layout the rest of the network's values already have: eight channels of a pixel
/// are one vector, so every tap is a vector multiply-add with no gather, and no value goes through
/// NCHW on its way between the pointwise convolutions around it.
///
/// One pass over dy computes both gradients:
/// - dx: each output pixel's gradient vector times each tap's filter vector, added into the input
///   pixel the tap read (a scatter over the padded input; the halo, which stood for zero padding,
///   is cleared afterwards).
/// - dw: per tap, the sum over images and pixels of dy · x, in vector accumulators per block (one
///   block per worker, images in order, so the sum does not depend on the thread count).
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
        let t = needInput ? BlockedTensor(zeros: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad) : nil
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
                        for oi in 0..<ho {
                            let row = (oi * sh - g.pads[0] + x.pad) * xs + (x.pad - g.pads[1]) * 8
                            for oj in 0..<wo {
                                let v = load(gsrc + oi * dy.rowStride + oj * 8)
                                bias += v
                                let at = row + oj * sw * 8
                                for k in 0..<taps { acc[k] += v * load(src + at + offsets.value[k]) }
                                if let dst {
                                    for k in 0..<taps {
                                        let q = dst + at + offsets.value[k]
                                        store(load(q) + v * load(filt + k * 8), q)
                                    }
                                }
                            }
                        }
                    }
                    for k in 0..<taps { store(acc[k], dwPacked.pointer + (blk * taps + k) * 8) }
                    store(bias, dbPacked.pointer + blk * 8)
                }
            }
        }
        t?.zeroHalo()
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
