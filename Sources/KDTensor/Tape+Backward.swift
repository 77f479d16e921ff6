extension Tape {
    /// Back-propagates from the given seeds (dL/dv for each v) through every recorded op.
    public func backward(_ seeds: [(Var, Tensor)]) throws { try backward(seeds, watching: [], final: { _ in }) }

    /// The same, calling `final(v)` for each watched value as soon as its gradient is complete
    /// (the earliest op that read it has run its rule), while the pass goes on: a data-parallel
    /// trainer starts summing those gradients across the ranks during the rest of the pass. A
    /// watched value no op read is never reported.
    public func backward(_ seeds: [(Var, Tensor)], watching: [Var], final: (Var) throws -> Void) throws {
        for (v, g) in seeds {
            guard shape(v).reduce(1, *) == g.count else {
                throw TensorError("gradient \(g.shape) does not match value \(shape(v))")
            }
            accumulate(v.id, g)
        }
        // For each record, the watched values whose first reader it is.
        var completes: [Int: [Var]] = [:]
        if !watching.isEmpty {
            var firstReader: [Int: Int] = [:]
            let watched = Set(watching.map(\.id))
            for (i, r) in records.enumerated() {
                for id in r.inputs where watched.contains(id) && firstReader[id] == nil { firstReader[id] = i }
            }
            for v in watching { if let i = firstReader[v.id] { completes[i, default: []].append(v) } }
        }
        for (i, record) in records.enumerated().reversed() {
            if grads[record.output] != nil {
                try Profiler.measure("backward \(record.op.name)") { try backward(record) }
                // An op's output gradient is not read again once its rule has run (the gradients
                // callers read are those of leaves, which no op outputs): its memory goes back now.
                grads[record.output] = nil
            }
            for v in completes[i] ?? [] { try final(v) }
        }
    }

    private func accumulate(_ id: Int, _ g: Tensor) { accumulate(id, .plain(g)) }

    private func accumulate(_ id: Int, _ g: BlockedTensor) { accumulate(id, .blocked(g)) }

    /// Only the first gradient can be taken as is; later ones add into it (in its layout).
    private func accumulate(_ id: Int, _ g: Grad) {
        guard needsGrad[id] else { return }
        switch (grads[id], g) {
        case (nil, .plain(let t)):
            let s = shape(Var(id: id))
            grads[id] = .plain(t.count == 0 || t.shape == s ? t : (try? t.reshaped(s)) ?? t)
        case (nil, .blocked):
            grads[id] = g
        case (.plain(let e), .plain(let t)):
            Elementwise.accumulate(e, t)
        case (.plain(let e), .blocked(let b)):
            Elementwise.accumulate(e, b.plain())
        case (.blocked(let e), .blocked(let b)):
            BlockedOps.accumulate(e, b)
        case (.blocked(let e), .plain(let t)):
            BlockedOps.accumulate(e, BlockedTensor((try? t.reshaped(e.shape)) ?? t, pad: e.pad))
        }
    }

    /// dL/d(value `id`) in NCHW (converted when it is blocked).
    private func gradPlain(_ id: Int) -> Tensor {
        switch grads[id]! {
        case .plain(let t): return t
        case .blocked(let b): return b.plain()
        }
    }

    /// dL/d(value `id`) blocked (converted when it is in NCHW).
    private func gradBlocked(_ id: Int) -> BlockedTensor {
        switch grads[id]! {
        case .blocked(let b): return b
        case .plain(let t):
            let s = shape(Var(id: id))
            return BlockedTensor((try? t.reshaped(s)) ?? t, pad: halo)
        }
    }

    /// Whether the output gradient of value `id` is a blocked tensor that only `grads[id]` holds,
    /// so a rule may write its input's gradient over it: a rule that hands a gradient on to
    /// another value gives it away or copies it (`.add` gives it to its first input and copies it
    /// for the second), the loop drops `grads[id]` right after the rule, and the seeds callers
    /// pass in are NCHW tensors (`.plain`), which `gradBlocked` converts into new buffers.
    private func ownsBlockedGrad(_ id: Int) -> Bool {
        if case .blocked = grads[id] { return true }
        return false
    }

    /// The backward rule of each op, next to its forward in `Tape.swift`.
    private func backward(_ r: Record) throws {
        let ins = r.inputs
        func need(_ i: Int) -> Bool { needsGrad[ins[i]] }
        func values(_ i: Int) -> Tensor { value(Var(id: i)) }
        var dy: Tensor { gradPlain(r.output) }
        switch r.op {
        case .linear(let hasBias):
            // Leading dimensions fold into the rows (a rank-3/4 input is a batch of rows).
            let xv = values(ins[0])
            let rows = xv.rank == 2 ? xv : try xv.reshaped([xv.count / max(1, xv.shape.last ?? 1), xv.shape.last ?? 1])
            let g0 = dy
            let dyRows = g0.rank == 2 ? g0 : try g0.reshaped([g0.count / max(1, g0.shape.last ?? 1), g0.shape.last ?? 1])
            let g = Linear.backward(dy: dyRows, x: rows, weight: values(ins[1]), hasBias: hasBias, needInput: need(0))
            if let dx = g.dx { accumulate(ins[0], dx) }
            accumulate(ins[1], g.dw)
            if let db = g.db { accumulate(ins[2], db) }
        case .conv2d(let window, let groups, let hasBias):
            let g = Conv2d.backward(
                dy: dy, x: values(ins[0]), weight: values(ins[1]), hasBias: hasBias, window, groups: groups, needInput: need(0))
            if let dx = g.dx { accumulate(ins[0], dx) }
            accumulate(ins[1], g.dw)
            if let db = g.db { accumulate(ins[2], db) }
        case .conv2dBlocked(let window, let hasBias, let plainInput):
            let g = gradBlocked(r.output)
            let weight = values(ins[1])
            guard BlockedConvGradient.applies(window, groups: 1) else {
                // Dilated or wide kernels: the NCHW rules.
                let grads = Conv2d.backward(
                    dy: g.plain(), x: values(ins[0]), weight: weight, hasBias: hasBias, window, groups: 1, needInput: need(0))
                if let dx = grads.dx { accumulate(ins[0], dx) }
                accumulate(ins[1], grads.dw)
                if let db = grads.db { accumulate(ins[2], db) }
                return
            }
            let x = Var(id: ins[0])
            if !plainInput, PointwiseGEMM.applies(window, groups: 1, h: g.h, w: g.w) {
                let grads = PointwiseGEMM.backward(x: blockedValue(x), dy: g, weight: weight, needInput: need(0), pad: halo)
                if let dx = grads.dx { accumulate(ins[0], dx) }
                accumulate(ins[1], grads.dw)
                if hasBias { accumulate(ins[2], BlockedConvGradient.bias(g)) }
                return
            }
            if need(0) {
                let s = shape(x)
                let dx = Profiler.measure("backward conv2d (input)") {
                    BlockedConvGradient.input(dy: g, weight: weight, window: window, h: s[2], w: s[3], pad: halo)
                }
                if plainInput { accumulate(ins[0], dx.plain()) } else { accumulate(ins[0], dx) }
            }
            let dw = Profiler.measure("backward conv2d (weight)") {
                plainInput
                    ? BlockedConvGradient.weight(plain: value(x), dy: g, window: window)
                    : BlockedConvGradient.weight(x: blockedValue(x), dy: g, window: window)
            }
            accumulate(ins[1], dw)
            if hasBias { accumulate(ins[2], BlockedConvGradient.bias(g)) }
        case .depthwiseBlocked(let window, let hasBias, let input):
            let g = Depthwise.blockedBackward(
                dy: gradBlocked(r.output), x: input, weight: values(ins[1]), window, hasBias: hasBias, needInput: need(0))
            if let dx = g.dx { accumulate(ins[0], dx.pad == halo ? dx : dx.withPad(halo)) }
            accumulate(ins[1], g.dw)
            if let db = g.db { accumulate(ins[2], db) }
        case .batchnormBlocked(let saved):
            let g = try BlockedOps.batchNormBackward(
                dy: gradBlocked(r.output), saved: saved, scale: values(ins[1]), overwrite: ownsBlockedGrad(r.output))
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            accumulate(ins[2], g.dbias)
        case .batchnormReluBlocked(let saved, let upper):
            let g = try BlockedOps.batchNormBackward(
                dy: gradBlocked(r.output), saved: saved, scale: values(ins[1]), reluOutput: blockedValues[r.output]!, upper: upper,
                overwrite: ownsBlockedGrad(r.output))
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            accumulate(ins[2], g.dbias)
        case .batchnormAddReluBlocked(let saved):
            let masked = BlockedOps.masked(gradBlocked(r.output), by: blockedValues[r.output]!, overwrite: ownsBlockedGrad(r.output))
            let g = try BlockedOps.batchNormBackward(dy: masked, saved: saved, scale: values(ins[1]))
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            accumulate(ins[2], g.dbias)
            accumulate(ins[3], masked)
        case .addReluBlocked:
            let (a, b) = BlockedOps.addReluBackward(
                dy: gradBlocked(r.output), y: blockedValues[r.output]!, overwrite: ownsBlockedGrad(r.output))
            accumulate(ins[0], a)
            accumulate(ins[1], ins[1] == ins[0] ? a : b)
        case .maxpoolBlocked(let argmax):
            accumulate(ins[0], BlockedOps.maxPoolBackward(dy: gradBlocked(r.output), argmax: argmax, input: blockedValue(Var(id: ins[0]))))
        case .globalAvgPoolBlocked:
            accumulate(ins[0], BlockedOps.globalAveragePoolBackward(dy: dy, shape: shape(Var(id: ins[0])), pad: halo))
        case .batchnorm(let saved):
            let g = try BatchNorm.backward(dy: dy, saved: saved, scale: values(ins[1]))
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            accumulate(ins[2], g.dbias)
        case .relu:
            if let y = blockedValues[r.output] {
                accumulate(ins[0], BlockedOps.reluBackward(dy: gradBlocked(r.output), y: y, overwrite: ownsBlockedGrad(r.output)))
            } else {
                accumulate(ins[0], Elementwise.reluBackward(dy: dy, y: values(r.output)))
            }
        case .sigmoid:
            accumulate(ins[0], Elementwise.sigmoidBackward(dy: dy, y: values(r.output)))
        case .maxpool(let argmax):
            accumulate(ins[0], Pooling.maxBackward(dy: dy, argmax: argmax, inputShape: values(ins[0]).shape))
        case .avgpool(let window, let countIncludePad):
            accumulate(
                ins[0], Pooling.avgBackward(dy: dy, inputShape: values(ins[0]).shape, window, countIncludePad: countIncludePad))
        case .globalAvgPool:
            accumulate(ins[0], Pooling.globalAvgBackward(dy: dy, inputShape: values(ins[0]).shape))
        case .add:
            // The first input may take the output's gradient itself: nothing reads that again, and
            // the first input's other gradients add into it later.
            switch grads[r.output]! {
            case .blocked(let g):
                accumulate(ins[0], g)
                accumulate(ins[1], ins[1] == ins[0] ? g : BlockedOps.copy(g))
            case .plain(let g):
                accumulate(ins[0], g)
                accumulate(ins[1], ins[1] == ins[0] ? g : g.copy())
            }
        case .gatherBlocked(let sources):
            let g = gradBlocked(r.output)
            for (i, id) in ins.enumerated() where needsGrad[id] && !ins[..<i].contains(id) {
                // Input i's channels as sources in the output gradient, a layer per repeat (a
                // channel gathered twice takes both gradients).
                var layers: [[BlockedTensor.ChannelSource?]] = []
                let channels = shape(Var(id: id))[1]
                for (j, s) in sources.enumerated() where ins[s.input] == id {
                    var layer = 0
                    while layer < layers.count && layers[layer][s.channel] != nil { layer += 1 }
                    if layer == layers.count { layers.append(Array(repeating: nil, count: channels)) }
                    layers[layer][s.channel] = BlockedTensor.ChannelSource(input: 0, channel: j)
                }
                for layer in layers {
                    switch grads[id] {
                    case nil:
                        grads[id] = .blocked(try BlockedTensor.gatherChannels([g], layer, outPad: halo))
                    case .blocked(let e):
                        try BlockedTensor.addGathered([g], layer, into: e)
                    case .plain(let t):
                        let e = BlockedTensor((try? t.reshaped(shape(Var(id: id)))) ?? t, pad: halo)
                        try BlockedTensor.addGathered([g], layer, into: e)
                        grads[id] = .blocked(e)
                    }
                }
            }
        case .concat(let axis, let sizes):
            for (i, piece) in Elementwise.split(dy, axis: axis, sizes: sizes).enumerated() { accumulate(ins[i], piece) }
        case .reshape:
            accumulate(ins[0], try dy.copy().reshaped(values(ins[0]).shape))
        case .dropout(let mask):
            accumulate(ins[0], Elementwise.multiply(dy, mask))
        case .softmax:
            accumulate(ins[0], Softmax.backward(dy: dy, y: values(r.output)))
        case .splitLinear(let inSplits, let shared):
            let x = values(ins[0])
            let dx = Tensor(zeros: x.shape)
            var offset = 0
            for k in 0..<inSplits.count {
                let w = values(ins[1 + 2 * k])
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
                dy: dy, x: values(ins[0]), gamma: values(ins[1]), groups: groups, epsilon: epsilon, norms: norms)
            accumulate(ins[0], dx)
            accumulate(ins[1], dgamma)
        case .activation(let f):
            accumulate(ins[0], f.backward(dy: dy, x: values(ins[0]), y: values(r.output)))
        case .activationBlocked(let f):
            let (x, y) = (blockedValue(Var(id: ins[0])), blockedValue(Var(id: r.output)))
            var g = gradBlocked(r.output)
            if g.pad != x.pad { g = g.withPad(x.pad) }
            let dx = BlockedTensor(uninitialized: x.n, channels: x.channels, h: x.h, w: x.w, pad: x.pad, zeroHalo: false)
            let count = x.data.count
            let (xp, yp, gp, dp) = (x.data.pointer, y.data.pointer, g.data.pointer, dx.data.pointer)
            Parallel.chunks(count, parts: count > 1 << 15 ? Parallel.threads : 1) { _, range in
                let o = range.lowerBound
                f.backward(x: xp + o, y: yp + o, dy: gp + o, dx: dp + o, count: range.count)
            }
            accumulate(ins[0], dx)
        case .broadcast(let op):
            let (da, db) = try Broadcast.backward(op, dy: dy, x: values(ins[0]), y: values(ins[1]), needX: need(0), needY: need(1))
            if let da { accumulate(ins[0], da) }
            if let db { accumulate(ins[1], db) }
        case .reduceMean(let axes):
            accumulate(ins[0], Shaping.reduceMeanBackward(dy: dy, inputShape: shape(Var(id: ins[0])), axes: axes))
        case .transpose(let perm):
            accumulate(ins[0], Shaping.transpose(dy, perm: Shaping.inverse(perm)))
        case .pad(let pads):
            accumulate(ins[0], Shaping.padBackward(dy: dy, inputShape: shape(Var(id: ins[0])), pads: pads))
        case .slice(let ranges):
            accumulate(ins[0], Shaping.sliceBackward(dy: dy, inputShape: shape(Var(id: ins[0])), ranges: ranges))
        case .layerNorm(let saved, let inner, let hasBias):
            let g = Shaping.layerNormBackward(dy: dy, saved: saved, scale: values(ins[1]), inner: inner)
            accumulate(ins[0], g.dx)
            accumulate(ins[1], g.dscale)
            if hasBias { accumulate(ins[2], g.dbias) }
        }
    }
}
