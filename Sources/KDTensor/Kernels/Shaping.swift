import Foundation

/// Elementwise arithmetic with NumPy broadcasting, and its gradients (summed back over the
/// broadcast dimensions).
public enum Broadcast {
    public enum Op: String, CaseIterable, Sendable { case add, sub, mul, div }

    /// The broadcast shape of a and b (aligned at the right; a dimension of 1 stretches), or nil.
    public static func shape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let x = i < r - a.count ? 1 : a[i - (r - a.count)]
            let y = i < r - b.count ? 1 : b[i - (r - b.count)]
            guard x == y || x == 1 || y == 1 else { return nil }
            out[i] = x == 1 ? y : x
        }
        return out
    }

    /// Strides of `s` read at the output shape `out` (0 along a stretched dimension).
    static func strides(_ s: [Int], _ out: [Int]) -> [Int] {
        let padded = [Int](repeating: 1, count: out.count - s.count) + s
        var st = [Int](repeating: 0, count: out.count)
        var acc = 1
        for i in stride(from: out.count - 1, through: 0, by: -1) {
            st[i] = padded[i] == 1 && out[i] != 1 ? 0 : acc
            acc *= padded[i]
        }
        return st
    }

    /// Collapses adjacent dimensions whose strides continue each other in both operands, so the
    /// innermost loop runs as long as possible: (dims, strides of a, strides of b).
    static func collapsed(_ out: [Int], _ sa: [Int], _ sb: [Int]) -> ([Int], [Int], [Int]) {
        var d: [Int] = []
        var a: [Int] = []
        var b: [Int] = []
        for i in 0..<out.count where out[i] != 1 {
            if let last = d.indices.last, a[last] == sa[i] * out[i], b[last] == sb[i] * out[i] {
                d[last] *= out[i]
                a[last] = sa[i]
                b[last] = sb[i]
            } else {
                d.append(out[i])
                a.append(sa[i])
                b.append(sb[i])
            }
        }
        if d.isEmpty { return ([1], [0], [0]) }
        return (d, a, b)
    }

    /// Calls `body(offsetA, offsetB, offsetOut, n, strideA, strideB)` for each innermost run.
    static func runs(_ out: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int, Int, Int, Int) -> Void) {
        let (d, a, b) = collapsed(out, sa, sb)
        let inner = d.count - 1
        let n = d[inner]
        let outer = d.dropLast().reduce(1, *)
        var idx = [Int](repeating: 0, count: max(inner, 1))
        var (oa, ob) = (0, 0)
        for r in 0..<outer {
            body(oa, ob, r * n, n, a[inner], b[inner])
            // Odometer over the outer dimensions.
            var k = inner - 1
            while k >= 0 {
                idx[k] += 1
                oa += a[k]
                ob += b[k]
                if idx[k] < d[k] { break }
                oa -= a[k] * d[k]
                ob -= b[k] * d[k]
                idx[k] = 0
                k -= 1
            }
        }
    }

    public static func forward(_ op: Op, _ x: Tensor, _ y: Tensor) throws -> Tensor {
        guard let s = shape(x.shape, y.shape) else {
            throw TensorError("\(op.rawValue): shapes \(x.shape) and \(y.shape) do not broadcast")
        }
        let out = Tensor(uninitialized: s)
        let (pa, pb, po) = (x.pointer, y.pointer, out.pointer)
        runs(s, strides(x.shape, s), strides(y.shape, s)) { oa, ob, oo, n, sa, sb in
            let (a, b, o) = (pa + oa, pb + ob, po + oo)
            switch (op, sa, sb) {
            case (.add, 1, 1): for i in 0..<n { o[i] = a[i] + b[i] }
            case (.mul, 1, 1): for i in 0..<n { o[i] = a[i] * b[i] }
            case (.add, 1, 0):
                let v = b[0]
                for i in 0..<n { o[i] = a[i] + v }
            case (.mul, 1, 0):
                let v = b[0]
                for i in 0..<n { o[i] = a[i] * v }
            default:
                for i in 0..<n {
                    let (u, v) = (a[i * sa], b[i * sb])
                    o[i] =
                        switch op {
                        case .add: u + v
                        case .sub: u - v
                        case .mul: u * v
                        case .div: u / v
                        }
                }
            }
        }
        return out
    }

    /// Sums `t` (of the broadcast shape) down to `target`, the shape of one operand.
    public static func reduce(_ t: Tensor, to target: [Int]) -> Tensor {
        if t.shape == target { return t }
        let out = Tensor(zeros: target)
        let po = out.pointer
        let pt = t.pointer
        let so = strides(target, t.shape)
        let unit = [Int](repeating: 1, count: t.rank)
        var st = unit
        var acc = 1
        for i in stride(from: t.rank - 1, through: 0, by: -1) {
            st[i] = acc
            acc *= t.shape[i]
        }
        runs(t.shape, st, so) { ot, oo, _, n, s1, s2 in
            if s2 == 0 {
                var sum: Float = 0
                for i in 0..<n { sum += pt[ot + i * s1] }
                po[oo] += sum
            } else {
                for i in 0..<n { po[oo + i * s2] += pt[ot + i * s1] }
            }
        }
        return out
    }

    /// Gradients of both operands (nil where not needed).
    public static func backward(_ op: Op, dy: Tensor, x: Tensor, y: Tensor, needX: Bool, needY: Bool) throws -> (Tensor?, Tensor?) {
        var dx: Tensor?
        var dyy: Tensor?
        switch op {
        case .add:
            if needX { dx = reduce(dy.copy(), to: x.shape) }
            if needY { dyy = reduce(dy.copy(), to: y.shape) }
        case .sub:
            if needX { dx = reduce(dy.copy(), to: x.shape) }
            if needY {
                let neg = dy.copy()
                for i in 0..<neg.count { neg.pointer[i] = -neg.pointer[i] }
                dyy = reduce(neg, to: y.shape)
            }
        case .mul:
            if needX { dx = reduce(try forward(.mul, dy, y), to: x.shape) }
            if needY { dyy = reduce(try forward(.mul, dy, x), to: y.shape) }
        case .div:
            if needX { dx = reduce(try forward(.div, dy, y), to: x.shape) }
            if needY {
                // d(a/b)/db = −a/b² = −(a/b)/b
                let q = try forward(.div, try forward(.div, try forward(.mul, dy, x), y), y)
                for i in 0..<q.count { q.pointer[i] = -q.pointer[i] }
                dyy = reduce(q, to: y.shape)
            }
        }
        return (dx, dyy)
    }
}

/// Reductions, permutations, padding, slicing and layer normalization over arbitrary ranks.
public enum Shaping {
    static func strides(_ s: [Int]) -> [Int] {
        var st = [Int](repeating: 1, count: s.count)
        var acc = 1
        for i in stride(from: s.count - 1, through: 0, by: -1) {
            st[i] = acc
            acc *= s[i]
        }
        return st
    }

    /// Mean over `axes` (normalised, distinct); the output keeps them as 1s (`keepdims`) or drops them.
    public static func reduceMean(_ x: Tensor, axes: [Int], keepdims: Bool) -> Tensor {
        var kept = x.shape
        for a in axes { kept[a] = 1 }
        let sum = Broadcast.reduce(x, to: kept)
        let n = Float(axes.reduce(1) { $0 * x.shape[$1] })
        for i in 0..<sum.count { sum.pointer[i] /= n }
        if keepdims { return sum }
        return (try? sum.reshaped(kept.enumerated().filter { !axes.contains($0.offset) }.map(\.element))) ?? sum
    }

    public static func reduceMeanBackward(dy: Tensor, inputShape: [Int], axes: [Int]) -> Tensor {
        var kept = inputShape
        for a in axes { kept[a] = 1 }
        let g = (try? dy.reshaped(kept)) ?? dy
        let dx = Tensor(uninitialized: inputShape)
        let n = Float(axes.reduce(1) { $0 * inputShape[$1] })
        let (pg, pd) = (g.pointer, dx.pointer)
        Broadcast.runs(inputShape, strides(inputShape), Broadcast.strides(kept, inputShape)) { od, og, _, count, s1, s2 in
            for i in 0..<count { pd[od + i * s1] = pg[og + i * s2] / n }
        }
        return dx
    }

    /// y = xᵀ with y.shape[i] = x.shape[perm[i]].
    public static func transpose(_ x: Tensor, perm: [Int]) -> Tensor {
        let outShape = perm.map { x.shape[$0] }
        let y = Tensor(uninitialized: outShape)
        let xs = strides(x.shape)
        let src = perm.map { xs[$0] }
        let (px, py) = (x.pointer, y.pointer)
        // Runs along the output's last axis, read at the source stride.
        Broadcast.runs(outShape, strides(outShape), src) { oy, ox, _, n, sy, sx in
            if sx == 1 && sy == 1 {
                (py + oy).update(from: px + ox, count: n)
            } else {
                for i in 0..<n { py[oy + i * sy] = px[ox + i * sx] }
            }
        }
        return y
    }

    public static func inverse(_ perm: [Int]) -> [Int] {
        var inv = [Int](repeating: 0, count: perm.count)
        for (i, p) in perm.enumerated() { inv[p] = i }
        return inv
    }

    /// Constant padding: `pads` = [begin_0 … begin_{r−1}, end_0 … end_{r−1}], all ≥ 0.
    public static func pad(_ x: Tensor, pads: [Int], value: Float) -> Tensor {
        let r = x.rank
        let outShape = (0..<r).map { x.shape[$0] + pads[$0] + pads[$0 + r] }
        let y = Tensor(shape: outShape, repeating: value)
        copyBlock(from: x, into: y, offset: Array(pads[..<r]), reverse: false)
        return y
    }

    /// Copies x into the window of y that starts at `offset` (or, reversed, that window of y into x).
    static func copyBlock(from x: Tensor, into y: Tensor, offset: [Int], reverse: Bool) {
        let ys = strides(y.shape)
        let base = zip(offset, ys).reduce(0) { $0 + $1.0 * $1.1 }
        let (px, py) = (x.pointer, y.pointer)
        Broadcast.runs(x.shape, strides(x.shape), ys) { ox, oy, _, n, sx, sy in
            if reverse {
                for i in 0..<n { px[ox + i * sx] = py[base + oy + i * sy] }
            } else {
                for i in 0..<n { py[base + oy + i * sy] = px[ox + i * sx] }
            }
        }
    }

    public static func padBackward(dy: Tensor, inputShape: [Int], pads: [Int]) -> Tensor {
        let dx = Tensor(uninitialized: inputShape)
        copyBlock(from: dx, into: dy, offset: Array(pads[..<inputShape.count]), reverse: true)
        return dx
    }

    /// ONNX Slice bounds for one axis of size `n`: start and end clamped as the spec says for a
    /// positive step, so `end` may be any large value ("to the end").
    public static func sliceRange(start: Int, end: Int, size n: Int) -> Range<Int> {
        func clamp(_ v: Int) -> Int { Swift.max(0, Swift.min(n, v < 0 ? v &+ n : v)) }
        let (s, e) = (clamp(start), clamp(end))
        return s..<Swift.max(s, e)
    }

    /// x[ranges] with unit steps; axes not named keep their whole range.
    public static func slice(_ x: Tensor, ranges: [Range<Int>]) -> Tensor {
        let y = Tensor(uninitialized: ranges.map(\.count))
        copyBlock(from: y, into: x, offset: ranges.map(\.lowerBound), reverse: true)
        return y
    }

    public static func sliceBackward(dy: Tensor, inputShape: [Int], ranges: [Range<Int>]) -> Tensor {
        let dx = Tensor(zeros: inputShape)
        copyBlock(from: dy, into: dx, offset: ranges.map(\.lowerBound), reverse: false)
        return dx
    }

    /// What layer norm's backward needs: the normalised input and each row's 1/σ.
    public struct LayerNormSaved {
        public var xhat: Tensor
        public var invStd: [Float]
    }

    /// y = (x − μ)/√(σ² + ε)·scale + bias over the trailing `inner` values of each row.
    public static func layerNorm(_ x: Tensor, scale: Tensor, bias: Tensor?, inner: Int, epsilon: Float) -> (Tensor, LayerNormSaved) {
        let rows = x.count / max(inner, 1)
        let y = Tensor(uninitialized: x.shape)
        let xhat = Tensor(uninitialized: x.shape)
        var inv = [Float](repeating: 0, count: rows)
        inv.withUnsafeMutableBufferPointer { invp in
            let ip = UncheckedSendable(invp)
            Parallel.chunks(rows, parts: rows * inner > 1 << 15 ? Parallel.threads : 1) { _, r in
                for row in r {
                    let (xr, yr, hr) = (x.pointer + row * inner, y.pointer + row * inner, xhat.pointer + row * inner)
                    var mean: Double = 0
                    for i in 0..<inner { mean += Double(xr[i]) }
                    mean /= Double(inner)
                    var v: Double = 0
                    for i in 0..<inner {
                        let d = Double(xr[i]) - mean
                        v += d * d
                    }
                    let s = Float(1 / (v / Double(inner) + Double(epsilon)).squareRoot())
                    ip.value[row] = s
                    let m = Float(mean)
                    for i in 0..<inner {
                        let h = (xr[i] - m) * s
                        hr[i] = h
                        yr[i] = h * scale.pointer[i] + (bias?.pointer[i] ?? 0)
                    }
                }
            }
        }
        return (y, LayerNormSaved(xhat: xhat, invStd: inv))
    }

    public static func layerNormBackward(dy: Tensor, saved: LayerNormSaved, scale: Tensor, inner: Int) -> (
        dx: Tensor, dscale: Tensor, dbias: Tensor
    ) {
        let rows = dy.count / max(inner, 1)
        let dx = Tensor(uninitialized: dy.shape)
        let dscale = Tensor(zeros: [inner])
        let dbias = Tensor(zeros: [inner])
        for row in 0..<rows {
            let (g, h, d) = (dy.pointer + row * inner, saved.xhat.pointer + row * inner, dx.pointer + row * inner)
            var sumG: Float = 0
            var sumGH: Float = 0
            for i in 0..<inner {
                let gs = g[i] * scale.pointer[i]
                sumG += gs
                sumGH += gs * h[i]
                dscale.pointer[i] += g[i] * h[i]
                dbias.pointer[i] += g[i]
            }
            let n = Float(inner)
            let s = saved.invStd[row]
            for i in 0..<inner { d[i] = s * (g[i] * scale.pointer[i] - sumG / n - h[i] * sumGH / n) }
        }
        return (dx, dscale, dbias)
    }
}

extension Broadcast {
    /// x · s for channel-blocked x [N, C, H, W] and per-image channel scales s (N·C values, a
    /// squeeze-and-excitation gate), kept blocked with x's halo (zero stays zero). `inPlace`
    /// writes over x (its caller's last read of it).
    public static func scaleChannels(_ x: BlockedTensor, _ s: Tensor, inPlace: Bool = false) throws -> BlockedTensor {
        guard s.count == x.n * x.channels else {
            throw TensorError("mul: scales \(s.shape) do not give one value per image and channel of \(x.shape)")
        }
        // Every float of y is written below, its halo as x's zeros times the scale.
        let y = inPlace ? x : BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad, zeroHalo: false)
        let planes = x.n * x.blocks
        let per = x.planeStride
        Parallel.chunks(planes, parts: planes * per > 1 << 15 ? Parallel.threads : 1) { _, range in
            for plane in range {
                let (img, blk) = (plane / x.blocks, plane % x.blocks)
                var scale = SIMD8<Float>()
                for l in 0..<8 where blk * 8 + l < x.channels { scale[l] = s.pointer[img * x.channels + blk * 8 + l] }
                let (src, dst) = (x.data.pointer + plane * per, y.data.pointer + plane * per)
                var i = 0
                while i < per {
                    UnsafeMutableRawPointer(dst + i).storeBytes(
                        of: UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self) * scale, as: SIMD8<Float>.self)
                    i += 8
                }
            }
        }
        return y
    }
}
