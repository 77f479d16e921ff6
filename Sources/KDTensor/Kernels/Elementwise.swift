/// Pointwise ops and their gradients.
public enum Elementwise {
    public static func relu(_ x: Tensor) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        Parallel.chunks(x.count, parts: x.count > 1 << 16 ? Parallel.threads : 1) { _, r in
            for i in r { y.pointer[i] = max(x.pointer[i], 0) }
        }
        return y
    }

    /// max(x, 0) over the tensor's own storage (inference, where the input is not needed again).
    public static func reluInPlace(_ x: Tensor) {
        Parallel.chunks(x.count, parts: x.count > 1 << 16 ? Parallel.threads : 1) { _, r in
            for i in r { x.pointer[i] = max(x.pointer[i], 0) }
        }
    }

    /// dx = dy where the output was positive.
    public static func reluBackward(dy: Tensor, y: Tensor) -> Tensor {
        let dx = Tensor(uninitialized: dy.shape)
        Parallel.chunks(dy.count, parts: dy.count > 1 << 16 ? Parallel.threads : 1) { _, r in
            for i in r { dx.pointer[i] = y.pointer[i] > 0 ? dy.pointer[i] : 0 }
        }
        return dx
    }

    public static func sigmoid(_ x: Tensor) -> Tensor {
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<x.count {
            let v = x.pointer[i]
            // Stable on both tails.
            y.pointer[i] = v >= 0 ? 1 / (1 + expf(-v)) : expf(v) / (1 + expf(v))
        }
        return y
    }

    public static func sigmoidBackward(dy: Tensor, y: Tensor) -> Tensor {
        let dx = Tensor(uninitialized: dy.shape)
        for i in 0..<dy.count { dx.pointer[i] = dy.pointer[i] * y.pointer[i] * (1 - y.pointer[i]) }
        return dx
    }

    public static func add(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard a.shape == b.shape else { throw TensorError("add: shapes \(a.shape) and \(b.shape) differ") }
        let y = Tensor(uninitialized: a.shape)
        for i in 0..<a.count { y.pointer[i] = a.pointer[i] + b.pointer[i] }
        return y
    }

    /// a += b in place.
    public static func accumulate(_ a: Tensor, _ b: Tensor) {
        for i in 0..<a.count { a.pointer[i] += b.pointer[i] }
    }

    /// Inverted dropout: kept units are scaled by 1/(1 − p) so inference is the identity.
    public static func dropout(_ x: Tensor, ratio: Float, rng: inout RandomSource) -> (Tensor, Tensor) {
        let mask = Tensor(uninitialized: x.shape)
        let y = Tensor(uninitialized: x.shape)
        let keep = 1 / (1 - ratio)
        for i in 0..<x.count {
            let m: Float = rng.nextFloat() >= ratio ? keep : 0
            mask.pointer[i] = m
            y.pointer[i] = x.pointer[i] * m
        }
        return (y, mask)
    }

    public static func multiply(_ a: Tensor, _ b: Tensor) -> Tensor {
        let y = Tensor(uninitialized: a.shape)
        for i in 0..<a.count { y.pointer[i] = a.pointer[i] * b.pointer[i] }
        return y
    }

    /// Concatenation along `axis`.
    public static func concat(_ xs: [Tensor], axis: Int) throws -> Tensor {
        let first = xs[0].shape
        let ax = axis < 0 ? axis + first.count : axis
        guard ax >= 0, ax < first.count else { throw TensorError("concat axis \(axis) outside rank \(first.count)") }
        var shape = first
        shape[ax] = 0
        for x in xs {
            guard x.rank == first.count, (0..<first.count).allSatisfy({ $0 == ax || x.shape[$0] == first[$0] }) else {
                throw TensorError("concat: shapes \(first) and \(x.shape) differ outside axis \(ax)")
            }
            shape[ax] += x.shape[ax]
        }
        let outer = first[..<ax].reduce(1, *)
        let inner = first[(ax + 1)...].reduce(1, *)
        let y = Tensor(uninitialized: shape)
        var offset = 0
        let rowOut = shape[ax] * inner
        for x in xs {
            let run = x.shape[ax] * inner
            for o in 0..<outer { (y.pointer + o * rowOut + offset).update(from: x.pointer + o * run, count: run) }
            offset += run
        }
        return y
    }

    /// The pieces of a concatenation's gradient.
    public static func split(_ dy: Tensor, axis: Int, sizes: [Int]) -> [Tensor] {
        let ax = axis < 0 ? axis + dy.rank : axis
        let outer = dy.shape[..<ax].reduce(1, *)
        let inner = dy.shape[(ax + 1)...].reduce(1, *)
        let rowIn = dy.shape[ax] * inner
        var offset = 0
        return sizes.map { size in
            var shape = dy.shape
            shape[ax] = size
            let t = Tensor(uninitialized: shape)
            let run = size * inner
            for o in 0..<outer { (t.pointer + o * run).update(from: dy.pointer + o * rowIn + offset, count: run) }
            offset += run
            return t
        }
    }
}

#if canImport(Glibc)
    import Glibc
#endif
