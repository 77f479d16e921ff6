/// Batch normalisation over the channel axis (axis 1) of NCHW or NC input.
public enum BatchNorm {
    public struct Saved {
        public var xhat: Tensor
        public var invStd: [Float]
        /// Running statistics were used (inference mode): the input does not affect the statistics.
        public var frozen = false
        /// Synchronized batch norm: the statistics were over every rank's share of the batch, and
        /// the backward pass sums its per-channel terms over the ranks too.
        public var sync: World?
        /// Values per channel the statistics were over (all ranks' with `sync`).
        public var count: Double = 0

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
        _ x: Tensor, scale: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, epsilon: Float, momentum: Float,
        sync: World? = nil
    ) throws -> (Tensor, Saved) {
        try check(x, scale)
        let (n, c, hw) = geometry(x.shape)
        var m = Float(n * hw)
        // Per channel: the batch mean, then the variance about it (per-plane float partial sums,
        // vectorised, combined in double).
        var mean = [Float](repeating: 0, count: c)
        var variance = [Float](repeating: 0, count: c)
        mean.withUnsafeMutableBufferPointer { mp in
            variance.withUnsafeMutableBufferPointer { vp in
                let (mp, vp) = (UncheckedSendable(mp.baseAddress!), UncheckedSendable(vp.baseAddress!))
                Parallel.chunks(c) { _, channels in
                    for ch in channels where m > 0 {
                        var sum: Double = 0
                        for i in 0..<n { sum += Double(Reduce.sum(x.pointer + (i * c + ch) * hw, hw)) }
                        let mu = Float(sum / Double(m))
                        var sq: Double = 0
                        for i in 0..<n { sq += Double(Reduce.squaredDeviation(x.pointer + (i * c + ch) * hw, hw, mean: mu)) }
                        mp.value[ch] = mu
                        vp.value[ch] = Float(sq / Double(m))
                    }
                }
            }
        }
        if let sync {
            let g = try synchronized(
                mean: mean.map(Double.init), variance: variance.map(Double.init), count: Double(m), reference: runningMean, world: sync)
            mean = g.mean.map { Float($0) }
            variance = g.variance.map { Float($0) }
            m = Float(g.count)
        }
        let y = Tensor(uninitialized: x.shape)
        let xhat = Tensor(uninitialized: x.shape)
        var invStd = [Float](repeating: 0, count: c)
        invStd.withUnsafeMutableBufferPointer { inv in
            let invp = inv.baseAddress!
            Parallel.chunks(c) { _, channels in
                for ch in channels {
                    let (mu, variance) = (mean[ch], variance[ch])
                    let istd = 1 / (variance + epsilon).squareRoot()
                    invp[ch] = istd
                    let gamma = scale.pointer[ch]
                    let beta = bias.pointer[ch]
                    for i in 0..<n {
                        let off = (i * c + ch) * hw
                        for j in 0..<hw {
                            let xh = (x.pointer[off + j] - mu) * istd
                            xhat.pointer[off + j] = xh
                            y.pointer[off + j] = gamma * xh + beta
                        }
                    }
                    let unbiased = m > 1 ? variance * m / (m - 1) : variance
                    runningMean.pointer[ch] = (1 - momentum) * runningMean.pointer[ch] + momentum * mu
                    runningVar.pointer[ch] = (1 - momentum) * runningVar.pointer[ch] + momentum * unbiased
                }
            }
        }
        var saved = Saved(xhat: xhat, invStd: invStd)
        saved.sync = sync
        saved.count = Double(m)
        return (y, saved)
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

    public static func backward(dy: Tensor, saved: Saved, scale: Tensor) throws -> (dx: Tensor, dscale: Tensor, dbias: Tensor) {
        let (n, c, hw) = geometry(dy.shape)
        var m = Float(n * hw)
        let dx = Tensor(uninitialized: dy.shape)
        // Σdy and Σdy·x̂ per channel: the parameters' gradients (this rank's, with sync too: the
        // trainer sums them with the rest), and the only cross-example terms of dx.
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
            }
        }
        var (sdy, sdyx) = (dbias.array, dscale.array)
        if let world = saved.sync, !saved.frozen {
            let total = try synchronizedSums(sdy.map(Double.init), sdyx.map(Double.init), world: world)
            (sdy, sdyx) = (total.sdy.map { Float($0) }, total.sdyx.map { Float($0) })
            m = Float(saved.count)
        }
        Parallel.chunks(c) { _, channels in
            for ch in channels {
                if saved.frozen {
                    let k = scale.pointer[ch] * saved.invStd[ch]
                    for i in 0..<n {
                        let off = (i * c + ch) * hw
                        for j in 0..<hw { dx.pointer[off + j] = k * dy.pointer[off + j] }
                    }
                    continue
                }
                let k = scale.pointer[ch] * saved.invStd[ch] / m
                let (gd, gx) = (sdy[ch], sdyx[ch])
                for i in 0..<n {
                    let off = (i * c + ch) * hw
                    for j in 0..<hw {
                        dx.pointer[off + j] = k * (m * dy.pointer[off + j] - gd - saved.xhat.pointer[off + j] * gx)
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

// MARK: Synchronized batch norm (data-parallel, `--sync-batchnorm`)

extension BatchNorm {
    /// Batch mean and variance over every rank's share, from each rank's own (`mean`, `variance`
    /// over `count` values per channel). The ranks sum n·μ and n·(σ² + (μ − r)²) about a reference
    /// r that every rank holds alike (the running mean), which keeps the variance free of
    /// cancellation when the mean is large.
    public static func synchronized(
        mean: [Double], variance: [Double], count: Double, reference: Tensor, world: World
    ) throws -> (mean: [Double], variance: [Double], count: Double) {
        let c = mean.count
        var buffer = [Double](repeating: 0, count: 2 * c + 1)
        for ch in 0..<c {
            let d = mean[ch] - Double(reference[ch])
            buffer[ch] = count * mean[ch]
            buffer[c + ch] = count * (variance[ch] + d * d)
        }
        buffer[2 * c] = count
        try world.allreduceSum(&buffer, what: "synchronized batch-norm statistics")
        let total = buffer[2 * c]
        guard total > 0 else { throw TensorError("synchronized batch norm over an empty batch") }
        var gm = [Double](repeating: 0, count: c)
        var gv = [Double](repeating: 0, count: c)
        for ch in 0..<c {
            gm[ch] = buffer[ch] / total
            let d = gm[ch] - Double(reference[ch])
            gv[ch] = max(0, buffer[c + ch] / total - d * d)
        }
        return (gm, gv, total)
    }

    /// Σdy and Σdy·x̂ per channel summed over the ranks (the backward pass's only cross-example terms).
    public static func synchronizedSums(_ sdy: [Double], _ sdyx: [Double], world: World) throws -> (sdy: [Double], sdyx: [Double]) {
        var buffer = sdy + sdyx
        try world.allreduceSum(&buffer, what: "synchronized batch-norm gradients")
        return (Array(buffer[0..<sdy.count]), Array(buffer[sdy.count...]))
    }
}
