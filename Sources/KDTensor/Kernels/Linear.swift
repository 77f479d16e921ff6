/// y = x·Wᵀ + b for x [N, in], W [out, in].
public enum Linear {
    public static func forward(x: Tensor, weight: Tensor, bias: Tensor?) throws -> Tensor {
        guard x.rank == 2, weight.rank == 2, x.shape[1] == weight.shape[1] else {
            throw TensorError("linear input \(x.shape) does not match weight \(weight.shape)")
        }
        let (n, k, m) = (x.shape[0], x.shape[1], weight.shape[0])
        let y = Tensor(uninitialized: [n, m])
        if let bias {
            for i in 0..<n { (y.pointer + i * m).update(from: bias.pointer, count: m) }
        }
        BLAS.gemm(
            transB: true, m: n, n: m, k: k, a: x.pointer, lda: k, b: weight.pointer, ldb: k, beta: bias == nil ? 0 : 1,
            c: y.pointer, ldc: m)
        return y
    }

    public static func backward(dy: Tensor, x: Tensor, weight: Tensor, hasBias: Bool, needInput: Bool)
        -> (dx: Tensor?, dw: Tensor, db: Tensor?)
    {
        let (n, k, m) = (x.shape[0], x.shape[1], weight.shape[0])
        var dx: Tensor?
        if needInput {
            let t = Tensor(uninitialized: x.shape)
            BLAS.gemm(m: n, n: k, k: m, a: dy.pointer, lda: m, b: weight.pointer, ldb: k, c: t.pointer, ldc: k)
            dx = t
        }
        let dw = Tensor(uninitialized: weight.shape)
        BLAS.gemm(transA: true, m: m, n: k, k: n, a: dy.pointer, lda: m, b: x.pointer, ldb: k, c: dw.pointer, ldc: k)
        var db: Tensor?
        if hasBias {
            let b = Tensor(zeros: [m])
            for i in 0..<n { for j in 0..<m { b.pointer[j] += dy.pointer[i * m + j] } }
            db = b
        }
        return (dx, dw, db)
    }
}
