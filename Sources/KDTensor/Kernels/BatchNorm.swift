/// Batch normalisation over the channel axis (axis 1) of NCHW or NC input.
public enum BatchNorm {
    public struct Saved {
        public var xhat: Tensor
        public var invStd: [Float]
        /// Running statistics were used (inference mode): the input does not affect the statistics.
        public var frozen = false

        public init(xhat: Tensor, invStd: [Float]) {
            self.xhat = xhat
            self.invStd = invStd
        }
    }

    static func geometry(_ shape: [Int]) -> (n: Int, c: Int, hw: Int) {
        (shape[0], shape[1], shape.dropFirst(2).reduce(1, *))
    }

    /// Training mode: normalises with batch statistics and updates the running ones in place
    /// (running = (1 − momentum)·running + momentum·batch, unbiased variance as PyTorch does).
    public static func forwardTraining(
        _ x: Tensor, scale: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float
    ) throws -> (Tensor, Saved) {
        try check(x, scale)
        let (n, c, hw) = geometry(x.shape)
        let m = Float(n * hw)
        let y = Tensor(uninitialized: x.shape)
        let xhat = Tensor(uninitialized: x.shape)
        var invStd = [Float](repeating: 0, count: c)
        invStd.withUnsafeMutableBufferPointer { inv in
            let invp = inv.baseAddress!
            Parallel.chunks(c) { _, channels in
                for ch in channels {
                    // Per-plane float partial sums (vectorised), combined in double.
                    var sum: Double = 0
                    for i in 0..<n { sum += Double(Reduce.sum(x.pointer + (i * c + ch) * hw, hw)) }
                    let mean = Float(sum / Double(m))
                    var sq: Double = 0
                    for i in 0..<n { sq += Double(Reduce.squaredDeviation(x.pointer + (i * c + ch) * hw, hw, mean: mean)) }
                    let variance = Float(sq / Double(m))
                    let istd = 1 / (variance + epsilon).squareRoot()
                    invp[ch] = istd
                    let gamma = scale.pointer[ch]
                    let beta = bias.pointer[ch]
                    for i in 0..<n {
                        let off = (i * c + ch) * hw
                        for j in 0..<hw {
                            let xh = (x.pointer[off + j] - mean) * istd
                            xhat.pointer[off + j] = xh
                            y.pointer[off + j] = gamma * xh + beta
                        }
                    }
                    let unbiased = m > 1 ? variance * m / (m - 1) : variance
                    runningMean.pointer[ch] = (1 - momentum) * runningMean.pointer[ch] + momentum * mean
                    runningVar.pointer[ch] = (1 - momentum) * runningVar.pointer[ch] + momentum * unbiased
                }
            }
        }
        return (y, Saved(xhat: xhat, invStd: invStd))
    }

    /// Inference mode: running statistics.
    public static func forwardInference(
        _ x: Tensor, scale: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, epsilon: Float
    ) throws -> Tensor {
        try check(x, scale)
        let (n, c, hw) = geometry(x.shape)
        let y = Tensor(uninitialized: x.shape)
        Parallel.chunks(n * c) { _, planes in
            for p in planes {
                let ch = p % c
                let a = scale.pointer[ch] / (runningVar.pointer[ch] + epsilon).squareRoot()
                let b = bias.pointer[ch] - runningMean.pointer[ch] * a
                let src = x.pointer + p * hw
                let dst = y.pointer + p * hw
                for j in 0..<hw { dst[j] = src[j] * a + b }
            }
        }
        return y
    }

    public static func backward(dy: Tensor, saved: Saved, scale: Tensor) -> (dx: Tensor, dscale: Tensor, dbias: Tensor) {
        let (n, c, hw) = geometry(dy.shape)
        let m = Float(n * hw)
        let dx = Tensor(uninitialized: dy.shape)
        let dscale = Tensor(uninitialized: [c])
        let dbias = Tensor(uninitialized: [c])
        Parallel.chunks(c) { _, channels in
            for ch in channels {
                var sdy: Float = 0
                var sdyx: Float = 0
                for i in 0..<n {
                    let off = (i * c + ch) * hw
                    sdy += Reduce.sum(dy.pointer + off, hw)
                    sdyx += Reduce.dot(dy.pointer + off, saved.xhat.pointer + off, hw)
                }
                dscale.pointer[ch] = sdyx
                dbias.pointer[ch] = sdy
                if saved.frozen {
                    let k = scale.pointer[ch] * saved.invStd[ch]
                    for i in 0..<n {
                        let off = (i * c + ch) * hw
                        for j in 0..<hw { dx.pointer[off + j] = k * dy.pointer[off + j] }
                    }
                    continue
                }
                let k = scale.pointer[ch] * saved.invStd[ch] / m
                for i in 0..<n {
                    let off = (i * c + ch) * hw
                    for j in 0..<hw {
                        dx.pointer[off + j] = k * (m * dy.pointer[off + j] - sdy - saved.xhat.pointer[off + j] * sdyx)
                    }
                }
            }
        }
        return (dx, dscale, dbias)
    }

    static func check(_ x: Tensor, _ scale: Tensor) throws {
        guard x.rank >= 2, scale.shape == [x.shape[1]] else {
            throw TensorError("batchnorm scale \(scale.shape) does not match input \(x.shape)")
        }
    }
}
