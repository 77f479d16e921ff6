/// Activations in channel-blocked layout (NCHW8c) with a zero halo: `[N][⌈C/8⌉][H+2p][W+2p][8]`,
/// the channels past C zero and the `pad` pixels around each plane zero. Eight channels of one
/// pixel are one 256-bit vector, which is what the direct convolution multiplies by a broadcast
/// input value; the halo is the zero padding of the next 3×3 convolution, already in place, so
/// every tile of that convolution is an interior tile (one pass, no border cases: measured 1.5×
/// faster on a 28×28 plane of 16 channels than restricting taps at the borders).
///
/// Every producer keeps the halo zero: it is zeroed when the tensor is made, kernels write the
/// interior only, and element-wise operations that map 0 to 0 (add, ReLU, rounding to an
/// activation grid that represents 0) may run over the whole buffer.
public struct BlockedTensor: @unchecked Sendable {
    public static let lanes = 8
    public let data: Tensor
    public let n: Int
    public let channels: Int
    public let h: Int
    public let w: Int
    /// Zero pixels around every plane, on each side.
    public let pad: Int
    public var blocks: Int { (channels + 7) / 8 }
    /// The NCHW shape this tensor stands for.
    public var shape: [Int] { [n, channels, h, w] }
    /// Floats from one pixel row to the next.
    public var rowStride: Int { (w + 2 * pad) * 8 }
    /// Floats from one (image, block) plane to the next.
    public var planeStride: Int { (h + 2 * pad) * (w + 2 * pad) * 8 }
    /// Floats from one image to the next.
    public var imageStride: Int { blocks * planeStride }
    /// Pixel (0, 0) of block 0 of image 0.
    public var origin: UnsafeMutablePointer<Float> { data.pointer + pad * (rowStride + 8) }

    public init(uninitialized n: Int, channels: Int, h: Int, w: Int, pad: Int = 0) {
        self.init(uninitialized: n, channels: channels, h: h, w: w, pad: pad, zeroHalo: true)
    }

    init(uninitialized n: Int, channels: Int, h: Int, w: Int, pad: Int, zeroHalo: Bool) {
        self.n = n
        self.channels = channels
        self.h = h
        self.w = w
        self.pad = pad
        self.data = Tensor(uninitialized: [n * ((channels + 7) / 8) * (h + 2 * pad) * (w + 2 * pad) * 8])
        if zeroHalo { self.zeroHalo() }
    }

    public init(zeros n: Int, channels: Int, h: Int, w: Int, pad: Int = 0) {
        self.init(uninitialized: n, channels: channels, h: h, w: w, pad: pad, zeroHalo: false)
        let (p, count) = (data.pointer, data.count)
        Parallel.chunks(count / 8, parts: count > 1 << 16 ? Parallel.threads : 1) { _, range in
            (p + range.lowerBound * 8).update(repeating: 0, count: range.count * 8)
        }
    }

    /// Zeroes the `pad` rows above and below each plane and the `pad` columns left and right of each row.
    func zeroHalo() {
        guard pad > 0 else { return }
        let (rows, row, plane) = (h + 2 * pad, rowStride, planeStride)
        let p = data.pointer
        let zero = SIMD8<Float>()
        let (side, right) = (pad * 8, (w + pad) * 8)
        // Vector stores, not memset: the side columns are a few floats per row.
        Parallel.chunks(n * blocks, parts: data.count > 1 << 17 ? Parallel.threads : 1) { _, range in
            for u in range { zeroHalo(plane: p + u * plane, rows: rows, row: row, side: side, right: right, zero: zero) }
        }
    }

    /// Zeroes the halo of plane `u` (image u / blocks, block u % blocks) alone: a kernel that writes
    /// a tensor plane by plane clears each plane's halo while the plane is in its cache, instead of
    /// a pass of its own over the whole tensor first (`init(uninitialized:…, zeroHalo: false)`).
    @inline(__always)
    func zeroHalo(plane u: Int) {
        guard pad > 0 else { return }
        zeroHalo(
            plane: data.pointer + u * planeStride, rows: h + 2 * pad, row: rowStride, side: pad * 8, right: (w + pad) * 8,
            zero: SIMD8<Float>())
    }

    private func zeroHalo(
        plane base: UnsafeMutablePointer<Float>, rows: Int, row: Int, side: Int, right: Int, zero: SIMD8<Float>
    ) {
        for j in stride(from: 0, to: pad * row, by: 8) {
            zero.store(base + j)
            zero.store(base + (rows - pad) * row + j)
        }
        for i in pad..<(rows - pad) {
            let r = base + i * row
            for j in stride(from: 0, to: side, by: 8) {
                zero.store(r + j)
                zero.store(r + right + j)
            }
        }
    }

    /// The NCHW tensor `x` regrouped into blocks of eight channels, with a halo of `pad`.
    public init(_ x: Tensor, pad: Int = 0) {
        precondition(x.rank == 4, "blocked layout needs NCHW, got \(x.shape)")
        self.init(uninitialized: x.shape[0], channels: x.shape[1], h: x.shape[2], w: x.shape[3], pad: pad)
        let (c, cb, hh, ww, row, plane) = (channels, blocks, h, w, rowStride, planeStride)
        let src = x.pointer
        let dst = origin
        Parallel.chunks(n * cb, parts: n * cb * hh * ww > 1 << 14 ? Parallel.threads : 1) { _, range in
            for u in range {
                let (img, b) = (u / cb, u % cb)
                let out = dst + u * plane
                for lane in 0..<8 {
                    let ch = b * 8 + lane
                    for i in 0..<hh {
                        let o = out + i * row + lane
                        if ch >= c {
                            for j in 0..<ww { o[j * 8] = 0 }
                            continue
                        }
                        let s = src + ((img * c + ch) * hh + i) * ww
                        for j in 0..<ww { o[j * 8] = s[j] }
                    }
                }
            }
        }
    }

    /// Back to NCHW (the padding channels and the halo dropped).
    public func plain() -> Tensor {
        let y = Tensor(uninitialized: shape)
        let (c, cb, hh, ww, row, plane) = (channels, blocks, h, w, rowStride, planeStride)
        let src = origin
        let dst = y.pointer
        Parallel.chunks(n * cb, parts: n * cb * hh * ww > 1 << 14 ? Parallel.threads : 1) { _, range in
            for u in range {
                let (img, b) = (u / cb, u % cb)
                let s = src + u * plane
                for lane in 0..<min(8, c - b * 8) {
                    for i in 0..<hh {
                        let d = dst + ((img * c + b * 8 + lane) * hh + i) * ww
                        let si = s + i * row + lane
                        for j in 0..<ww { d[j] = si[j * 8] }
                    }
                }
            }
        }
        return y
    }

    /// The same values with a halo of `pad` (self when it already has it).
    public func withPad(_ pad: Int) -> BlockedTensor {
        if pad == self.pad { return self }
        let y = BlockedTensor(uninitialized: n, channels: channels, h: h, w: w, pad: pad)
        let (hh, ww) = (h, w)
        let (si, so, di, dout) = (rowStride, planeStride, y.rowStride, y.planeStride)
        let (src, dst) = (origin, y.origin)
        for u in 0..<(n * blocks) {
            for i in 0..<hh { (dst + u * dout + i * di).update(from: src + u * so + i * si, count: ww * 8) }
        }
        return y
    }

    /// a + b (+ ReLU), both blocked with the same shape; the result has a's halo.
    public static func add(_ a: BlockedTensor, _ b: BlockedTensor, relu: Bool) throws -> BlockedTensor {
        guard a.shape == b.shape else { throw TensorError("add: shapes \(a.shape) and \(b.shape) differ") }
        let b = b.withPad(a.pad)
        // Over the whole buffer: the halos are zero and stay zero, so y's need no pass of their own.
        let y = BlockedTensor(uninitialized: a.n, channels: a.channels, h: a.h, w: a.w, pad: a.pad, zeroHalo: false)
        let (pa, pb, py) = (a.data.pointer, b.data.pointer, y.data.pointer)
        let vectors = a.data.count / 8
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range {
                var v = SIMD8.load(pa + i * 8) + SIMD8.load(pb + i * 8)
                if relu { v = v.replacing(with: 0, where: v .< 0) }
                v.store(py + i * 8)
            }
        }
        return y
    }

    /// Max pooling per channel block; padding never wins (as in `Pooling.maxForward`). The
    /// output gets a halo of `outPad`.
    public func maxPool(_ g: Window, outPad: Int = 0) throws -> BlockedTensor {
        let os = try Pooling.outputShape(shape, g)
        let (ho, wo) = (os[2], os[3])
        let y = BlockedTensor(uninitialized: n, channels: channels, h: ho, w: wo, pad: outPad)
        let (src, dst, hh, ww) = (origin, y.origin, h, w)
        let (row, plane, orow, oplane) = (rowStride, planeStride, y.rowStride, y.planeStride)
        let simple =
            g.kernel == (2, 2) && g.stride == (2, 2) && g.dilation == (1, 1) && g.pads == [0, 0, 0, 0] && 2 * ho <= h && 2 * wo <= w
        Parallel.chunks(n * blocks) { _, range in
            for u in range {
                let s = src + u * plane
                let d = dst + u * oplane
                if simple {
                    // 2×2, stride 2: four vectors per output, no bounds to check.
                    for oi in 0..<ho {
                        let r0 = s + 2 * oi * row
                        let r1 = r0 + row
                        for oj in 0..<wo {
                            let (a, b) = (SIMD8.load(r0 + 16 * oj), SIMD8.load(r0 + 16 * oj + 8))
                            let (c, e) = (SIMD8.load(r1 + 16 * oj), SIMD8.load(r1 + 16 * oj + 8))
                            var m = a.replacing(with: b, where: b .> a)
                            m = m.replacing(with: c, where: c .> m)
                            m = m.replacing(with: e, where: e .> m)
                            let nan = (a .!= a) .| (b .!= b) .| (c .!= c) .| (e .!= e)
                            m.replacing(with: .nan, where: nan).store(d + oi * orow + oj * 8)
                        }
                    }
                    continue
                }
                for oi in 0..<ho {
                    let i0 = oi * g.stride.h - g.pads[0]
                    for oj in 0..<wo {
                        let j0 = oj * g.stride.w - g.pads[1]
                        var best = SIMD8<Float>(repeating: -.infinity)
                        var nan = SIMDMask<SIMD8<Int32>>(repeating: false)
                        for ki in 0..<g.kernel.h {
                            let ii = i0 + ki * g.dilation.h
                            if ii < 0 || ii >= hh { continue }
                            for kj in 0..<g.kernel.w {
                                let jj = j0 + kj * g.dilation.w
                                if jj < 0 || jj >= ww { continue }
                                let v = SIMD8.load(s + ii * row + jj * 8)
                                best = best.replacing(with: v, where: v .> best)
                                nan .|= v .!= v
                            }
                        }
                        best.replacing(with: .nan, where: nan).store(d + oi * orow + oj * 8)
                    }
                }
            }
        }
        return y
    }

    /// Global average pooling to an NCHW `[N, C, 1, 1]` tensor.
    /// Split by channel blocks like the kernels that write the last layers of a single image.
    public func globalAveragePool() -> Tensor {
        let y = Tensor(uninitialized: [n, channels, 1, 1])
        let inv = 1 / Float(h * w)
        let (blocks, channels, h, w, origin) = (blocks, channels, h, w, origin)
        let (planeStride, rowStride, out) = (planeStride, rowStride, y.pointer)
        Parallel.chunks(n * blocks, parts: n * blocks * h * w > 1 << 10 ? Parallel.threads : 1) { _, units in
            for u in units {
                let (img, b) = (u / blocks, u % blocks)
                let s = origin + u * planeStride
                var acc = SIMD8<Float>()
                for i in 0..<h {
                    let r = s + i * rowStride
                    for j in 0..<w { acc += SIMD8.load(r + j * 8) }
                }
                for lane in 0..<min(8, channels - b * 8) { out[img * channels + b * 8 + lane] = acc[lane] * inv }
            }
        }
        return y
    }

    /// max(x, 0) in place (the halo stays zero).
    public func reluInPlace() {
        let p = data.pointer
        let vectors = data.count / 8
        Parallel.chunks(vectors, parts: vectors > 1 << 13 ? Parallel.threads : 1) { _, range in
            for i in range {
                let v = SIMD8.load(p + i * 8)
                v.replacing(with: 0, where: v .< 0).store(p + i * 8)
            }
        }
    }
}

extension SIMD8 where Scalar == Float {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> { load(UnsafePointer(p)) }
    @inline(__always)
    func store(_ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: self, as: SIMD8<Float>.self) }
}

extension BlockedTensor {
    /// The pixels as rows, `[N·H·W, C]` (a 1×1 convolution on a small map as a linear layer).
    /// Whole blocks of eight move as vectors; a last block of fewer channels lane by lane.
    ///
    /// Split between the workers by channel blocks, as the depthwise kernel and the packed linear
    /// kernel split a single image, so that each worker moves what its own core wrote: done on
    /// one thread, the gather and the scatter back (`init(pixelRows:…)`) of mobilenetv2's 4 × 4
    /// layers took 8–22 µs of each such layer's 30–90 µs at batch 1 on two threads.
    public func pixelRows() -> Tensor {
        let pixels = h * w
        let rows = Tensor(uninitialized: [n * pixels, channels])
        let (blocks, channels, h, w, origin) = (blocks, channels, h, w, origin)
        let (imageStride, planeStride, rowStride, dst) = (imageStride, planeStride, rowStride, rows.pointer)
        Parallel.chunks(n * blocks, parts: rows.count > 1 << 12 ? Parallel.threads : 1) { _, units in
            for u in units {
                let (img, blk) = (u / blocks, u % blocks)
                let lanes = min(8, channels - blk * 8)
                let plane = origin + img * imageStride + blk * planeStride
                // Wrapping arithmetic in the loops: every index is within the two buffers.
                for i in 0..<h {
                    for j in 0..<w {
                        let src = plane + (i &* rowStride &+ j &* 8)
                        let d = dst + ((img &* pixels &+ i &* w &+ j) &* channels &+ blk &* 8)
                        if lanes == 8 { SIMD8.load(src).store(d) } else { for l in 0..<lanes { d[l] = src[l] } }
                    }
                }
            }
        }
        return rows
    }

    /// Pixel rows `[N·H·W, C]` back in the blocked layout with a halo of `pad`, `residual` (the
    /// output's shape) added and then `activation` applied, row by row while each is in cache.
    /// Split by channel blocks, as `pixelRows()`.
    public init(pixelRows y: Tensor, n: Int, h: Int, w: Int, pad: Int, residual: BlockedTensor?, activation: Epilogue) {
        let (c, pixels) = (y.shape[1], h * w)
        self.init(uninitialized: n, channels: c, h: h, w: w, pad: pad, zeroHalo: false)
        let r = residual?.withPad(pad)
        let me = self
        let (blocks, imageStride, planeStride, rowStride, origin, src) = (blocks, imageStride, planeStride, rowStride, origin, y.pointer)
        Parallel.chunks(n * blocks, parts: y.count > 1 << 12 ? Parallel.threads : 1) { _, units in
            for u in units {
                let (img, blk) = (u / blocks, u % blocks)
                let lanes = min(8, c - blk * 8)
                let offset = img * imageStride + blk * planeStride
                me.zeroHalo(plane: u)
                // Wrapping arithmetic in the loops: every index is within the three buffers.
                let shortcut = r.map { $0.origin + offset }
                for i in 0..<h {
                    let row = origin + offset + i &* rowStride
                    for j in 0..<w {
                        let s = src + ((img &* pixels &+ i &* w &+ j) &* c &+ blk &* 8)
                        var v = SIMD8<Float>()
                        if lanes == 8 { v = SIMD8.load(s) } else { for l in 0..<lanes { v[l] = s[l] } }
                        if let shortcut { v += SIMD8.load(shortcut + (i &* rowStride &+ j &* 8)) }
                        v.store(row + j &* 8)
                    }
                    activation.apply(to: row, count: w * 8)
                }
            }
        }
    }
}
