/// Helpers for the Knowledge Concentration ops (split_linear, l2norm_scale).
public enum SplitLinear {
    /// Block k's input: its own slice of x followed by the shared tail.
    static func gather(_ x: Tensor, block k: Int, inSplits: [Int], shared: Int) -> Tensor {
        let n = x.shape[0]
        let f = x.shape[1]
        let start = inSplits[..<k].reduce(0, +)
        let width = inSplits[k] + shared
        let t = Tensor(uninitialized: [n, width])
        for i in 0..<n {
            (t.pointer + i * width).update(from: x.pointer + i * f + start, count: inSplits[k])
            if shared > 0 { (t.pointer + i * width + inSplits[k]).update(from: x.pointer + i * f + f - shared, count: shared) }
        }
        return t
    }

    /// Adds block k's input gradient back into the full input gradient.
    static func scatter(_ dxk: Tensor, into dx: Tensor, block k: Int, inSplits: [Int], shared: Int) {
        let n = dx.shape[0]
        let f = dx.shape[1]
        let start = inSplits[..<k].reduce(0, +)
        let width = inSplits[k] + shared
        for i in 0..<n {
            for j in 0..<inSplits[k] { dx.pointer[i * f + start + j] += dxk.pointer[i * width + j] }
            for j in 0..<shared { dx.pointer[i * f + f - shared + j] += dxk.pointer[i * width + inSplits[k] + j] }
        }
    }

    static func l2normScale(_ x: Tensor, gamma: Tensor, groups: [Int], epsilon: Float) -> (Tensor, [Float]) {
        let n = x.shape[0]
        let f = x.shape[1]
        let y = Tensor(uninitialized: x.shape)
        var norms = [Float](repeating: 0, count: n * groups.count)
        for i in 0..<n {
            var off = 0
            for (g, size) in groups.enumerated() {
                let row = x.pointer + i * f + off
                let out = y.pointer + i * f + off
                if size == 1 {
                    out[0] = row[0]
                } else {
                    var s: Float = 0
                    for j in 0..<size { s += row[j] * row[j] }
                    let r = max(s.squareRoot(), epsilon)
                    norms[i * groups.count + g] = r
                    if gamma.count == f {
                        for j in 0..<size { out[j] = row[j] * gamma.pointer[off + j] / r }
                    } else {
                        let k = gamma.pointer[g] / r
                        for j in 0..<size { out[j] = row[j] * k }
                    }
                }
                off += size
            }
        }
        return (y, norms)
    }

    static func l2normScaleBackward(
        dy: Tensor, x: Tensor, gamma: Tensor, groups: [Int], epsilon: Float, norms: [Float]
    ) -> (Tensor, Tensor) {
        let n = x.shape[0]
        let f = x.shape[1]
        let dx = Tensor(uninitialized: x.shape)
        let perFeature = gamma.count == f && gamma.count != groups.count
        let dgamma = Tensor(zeros: [gamma.count])
        for i in 0..<n {
            var off = 0
            for (g, size) in groups.enumerated() {
                let xr = x.pointer + i * f + off
                let dyr = dy.pointer + i * f + off
                let dxr = dx.pointer + i * f + off
                if size == 1 {
                    dxr[0] = dyr[0]
                } else {
                    let r = norms[i * groups.count + g]
                    if perFeature {
                        // y_j = γ_j x_j / r: dγ_j = dy_j x_j / r; dx_j = γ_j dy_j / r − x_j Σ_l γ_l dy_l x_l / r³
                        let gr = gamma.pointer + off
                        let dgr = dgamma.pointer + off
                        var dot: Float = 0
                        for j in 0..<size {
                            dgr[j] += dyr[j] * xr[j] / r
                            dot += gr[j] * dyr[j] * xr[j]
                        }
                        let proj: Float = r > epsilon ? dot / (r * r * r) : 0
                        for j in 0..<size { dxr[j] = gr[j] * dyr[j] / r - xr[j] * proj }
                    } else {
                        var dot: Float = 0
                        for j in 0..<size { dot += xr[j] * dyr[j] }
                        dgamma.pointer[g] += dot / r
                        let k = gamma.pointer[g] / r
                        // Below ε the norm is the constant ε, so only the direct term remains.
                        let proj: Float = r > epsilon ? dot / (r * r) : 0
                        for j in 0..<size { dxr[j] = k * (dyr[j] - xr[j] * proj) }
                    }
                }
                off += size
            }
        }
        return (dx, dgamma)
    }
}
