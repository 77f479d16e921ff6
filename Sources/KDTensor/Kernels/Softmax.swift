#if canImport(Glibc)
    import Glibc
#endif

/// Softmax, log-softmax and the classification losses, row-wise over [N, K] (numerically
/// stable: the row maximum is subtracted before exponentiating).
public enum Softmax {
    public static func rows(_ x: Tensor) -> (n: Int, k: Int) { (x.shape[0], x.count / max(x.shape[0], 1)) }

    /// softmax(x / temperature) per row.
    public static func forward(_ x: Tensor, temperature: Float = 1) -> Tensor {
        let y = logSoftmax(x, temperature: temperature)
        for i in 0..<y.count { y.pointer[i] = expf(y.pointer[i]) }
        return y
    }

    /// log softmax(x / temperature) per row: (x − max)/T − log Σ exp((x − max)/T).
    public static func logSoftmax(_ x: Tensor, temperature: Float = 1) -> Tensor {
        let (n, k) = rows(x)
        let y = Tensor(uninitialized: x.shape)
        for i in 0..<n {
            let src = x.pointer + i * k
            let dst = y.pointer + i * k
            var m = -Float.infinity
            for j in 0..<k { m = max(m, src[j]) }
            var s: Float = 0
            for j in 0..<k { s += expf((src[j] - m) / temperature) }
            let lse = logf(s)
            for j in 0..<k { dst[j] = (src[j] - m) / temperature - lse }
        }
        return y
    }

    /// dx = y ⊙ (dy − Σ dy⊙y) per row, for y = softmax(x).
    public static func backward(dy: Tensor, y: Tensor) -> Tensor {
        let (n, k) = rows(y)
        let dx = Tensor(uninitialized: y.shape)
        for i in 0..<n {
            var dot: Float = 0
            for j in 0..<k { dot += dy.pointer[i * k + j] * y.pointer[i * k + j] }
            for j in 0..<k { dx.pointer[i * k + j] = y.pointer[i * k + j] * (dy.pointer[i * k + j] - dot) }
        }
        return dx
    }

    /// Mean cross-entropy of logits against integer labels; returns the loss and dL/dlogits.
    public static func crossEntropy(logits: Tensor, labels: [Int]) -> (loss: Float, grad: Tensor) {
        let (n, k) = rows(logits)
        let p = forward(logits)
        var loss: Double = 0
        let inv = 1 / Float(n)
        for i in 0..<n {
            let y = labels[i]
            loss -= Double(logf(max(p.pointer[i * k + y], Float.leastNormalMagnitude)))
            for j in 0..<k { p.pointer[i * k + j] *= inv }
            p.pointer[i * k + y] -= inv
        }
        return (Float(loss / Double(n)), p)
    }

    /// Mean over rows of the cross-entropy against soft targets q: −Σ q log softmax(z/T);
    /// gradient (softmax(z/T) − q) / (N·T). With q one-hot and T = 1 this is `crossEntropy`.
    public static func softCrossEntropy(logits: Tensor, targets: Tensor, temperature: Float = 1) -> (loss: Float, grad: Tensor) {
        let (n, k) = rows(logits)
        let logp = logSoftmax(logits, temperature: temperature)
        let grad = Tensor(uninitialized: logits.shape)
        var loss: Double = 0
        let scale = 1 / (Float(n) * temperature)
        for i in 0..<(n * k) {
            loss -= Double(targets.pointer[i] * logp.pointer[i])
            grad.pointer[i] = (expf(logp.pointer[i]) - targets.pointer[i]) * scale
        }
        return (Float(loss / Double(n)), grad)
    }
}
