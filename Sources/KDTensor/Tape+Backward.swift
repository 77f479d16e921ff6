extension Tape {
    /// Back-propagates from the given seeds (dL/dv for each v) through every recorded op.
    public func backward(_ seeds: [(Var, Tensor)]) throws {
        for (v, g) in seeds {
            guard values[v.id].shape.reduce(1, *) == g.count else {
                throw TensorError("gradient \(g.shape) does not match value \(values[v.id].shape)")
            }
            accumulate(v.id, g)
        }
        for record in records.reversed() {
            guard let dy = grads[record.output] else { continue }
            try Profiler.measure("backward \(record.op.name)") { try backward(record, dy) }
        }
    }

    private func accumulate(_ id: Int, _ g: Tensor) {
        // Only the first gradient can be taken as is; later ones add into it.
        guard needsGrad[id] else { return }
        if let existing = grads[id] {
            Elementwise.accumulate(existing, g)
        } else {
            grads[id] = g.count == 0 || g.shape == values[id].shape ? g : (try? g.reshaped(values[id].shape)) ?? g
        }
    }

    /// The backward rule of each op, next to its forward in `Tape.swift`.
    private func backward(_ r: Record, _ dy: Tensor) throws {
        let ins = r.inputs
        func need(_ i: Int) -> Bool { needsGrad[ins[i]] }
        switch r.op {
        case .linear(let hasBias):
            let g = Linear.backward(dy: dy, x: values[ins[0]], weight: values[ins[1]], hasBias: hasBias, needInput: need(0))
            if let dx = g.dx { accumulate(ins[0], dx) }
            accumulate(ins[1], g.dw)
            if let db = g.db { accumulate(ins[2], db) }
        case .conv2d(let window, let groups, let hasBias):
            let g = Conv2d.backward(
                dy: dy, x: values[ins[0]], weight: values[ins[1]], hasBias: hasBias, window, groups: groups, needInput: need(0))
            if let dx = g.dx { accumulate(ins[0], dx) }
            accumulate(ins[1], g.dw)
            if let db = g.db { accumulate(ins[2], db) }
        case .batchnorm(let saved):
            let g = BatchNorm.backward(dy: dy, saved: saved, scale: values[ins[1]])
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            accumulate(ins[2], g.dbias)
        case .relu:
            accumulate(ins[0], Elementwise.reluBackward(dy: dy, y: values[r.output]))
        case .sigmoid:
            accumulate(ins[0], Elementwise.sigmoidBackward(dy: dy, y: values[r.output]))
        case .maxpool(let argmax):
            accumulate(ins[0], Pooling.maxBackward(dy: dy, argmax: argmax, inputShape: values[ins[0]].shape))
        case .avgpool(let window, let countIncludePad):
            accumulate(
                ins[0], Pooling.avgBackward(dy: dy, inputShape: values[ins[0]].shape, window, countIncludePad: countIncludePad))
        case .globalAvgPool:
            accumulate(ins[0], Pooling.globalAvgBackward(dy: dy, inputShape: values[ins[0]].shape))
        case .add:
            accumulate(ins[0], dy.copy())
            accumulate(ins[1], dy.copy())
        case .concat(let axis, let sizes):
            for (i, piece) in Elementwise.split(dy, axis: axis, sizes: sizes).enumerated() { accumulate(ins[i], piece) }
        case .reshape:
            accumulate(ins[0], try dy.copy().reshaped(values[ins[0]].shape))
        case .dropout(let mask):
            accumulate(ins[0], Elementwise.multiply(dy, mask))
        case .softmax:
            accumulate(ins[0], Softmax.backward(dy: dy, y: values[r.output]))
        case .splitLinear(let inSplits, let shared):
            let x = values[ins[0]]
            let dx = Tensor(zeros: x.shape)
            var offset = 0
            for k in 0..<inSplits.count {
                let w = values[ins[1 + 2 * k]]
                let outK = w.shape[0]
                let dyk = Elementwise.split(dy, axis: 1, sizes: [offset, outK, dy.shape[1] - offset - outK])[1]
                let xk = SplitLinear.gather(x, block: k, inSplits: inSplits, shared: shared)
                let g = Linear.backward(dy: dyk, x: xk, weight: w, hasBias: true, needInput: need(0))
                if let dxk = g.dx { SplitLinear.scatter(dxk, into: dx, block: k, inSplits: inSplits, shared: shared) }
                accumulate(ins[1 + 2 * k], g.dw)
                accumulate(ins[2 + 2 * k], g.db!)
                offset += outK
            }
            accumulate(ins[0], dx)
        case .l2normScale(let groups, let epsilon, let norms):
            let (dx, dgamma) = SplitLinear.l2normScaleBackward(
                dy: dy, x: values[ins[0]], gamma: values[ins[1]], groups: groups, epsilon: epsilon, norms: norms)
            accumulate(ins[0], dx)
            accumulate(ins[1], dgamma)
        }
    }
}
