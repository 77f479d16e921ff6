import KDBundle
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// SGD (momentum, Nesterov, weight decay) and Adam / AdamW, with PyTorch's update rules. State is
/// plain named tensors so checkpoints store it and `--resume` restores it exactly.
public struct Optimizer: Sendable {
    public enum Kind: String, CaseIterable, Sendable { case sgd, adam, adamw }

    public var kind: Kind
    public var momentum: Float = 0.9
    public var nesterov = false
    public var weightDecay: Float = 5e-4
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// Per-parameter state: momentum buffer (SGD) or first/second moments (Adam).
    public private(set) var state: [String: Tensor] = [:]
    public private(set) var steps = 0

    public init(_ kind: Kind) { self.kind = kind }

    /// One update of every parameter that has a gradient.
    public mutating func step(parameters: [String: Tensor], gradients: [String: Tensor], lr: Float) {
        steps += 1
        let t = Float(steps)
        for name in gradients.keys.sorted() {
            guard let p = parameters[name], let g = gradients[name] else { continue }
            let n = p.count
            let pp = p.pointer
            let gp = g.pointer
            switch kind {
            case .sgd:
                let wd = weightDecay
                let buf = slot("\(name).momentum", like: p)
                let bp = buf.pointer
                let first = steps == 1
                for i in 0..<n {
                    let d = gp[i] + wd * pp[i]
                    // PyTorch initialises the buffer with the first gradient.
                    bp[i] = first ? d : momentum * bp[i] + d
                    pp[i] -= lr * (nesterov ? d + momentum * bp[i] : bp[i])
                }
            case .adam, .adamw:
                let m = slot("\(name).exp_avg", like: p).pointer
                let v = slot("\(name).exp_avg_sq", like: p).pointer
                let c1 = 1 - powf(beta1, t)
                let c2 = 1 - powf(beta2, t)
                let decoupled = kind == .adamw
                for i in 0..<n {
                    var d = gp[i]
                    if decoupled { pp[i] -= lr * weightDecay * pp[i] } else { d += weightDecay * pp[i] }
                    m[i] = beta1 * m[i] + (1 - beta1) * d
                    v[i] = beta2 * v[i] + (1 - beta2) * d * d
                    pp[i] -= lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + epsilon)
                }
            }
        }
    }

    private mutating func slot(_ key: String, like p: Tensor) -> Tensor {
        // State restored from a checkpoint is used only when it has the parameter's shape.
        if let s = state[key], s.shape == p.shape { return s }
        let s = Tensor(zeros: p.shape)
        state[key] = s
        return s
    }

    /// Checkpoint form: tensors named `optim.<slot>` plus the step count.
    public var checkpointTensors: [BundleContents.Tensor] {
        state.keys.sorted().map {
            BundleContents.Tensor(name: "optim.\($0)", dtype: .f32, shape: state[$0]!.shape, bytes: state[$0]!.bytes)
        }
    }

    public mutating func restore(from bundle: ModelBundle, steps: Int) throws {
        state = [:]
        for t in bundle.tensors where t.name.hasPrefix("optim.") {
            state[String(t.name.dropFirst(6))] = Tensor(shape: t.shape, values: try bundle.floats(named: t.name))
        }
        self.steps = steps
    }

    public var hyperparameters: [String: Value] {
        var h: [String: Value] = ["optimizer": .string(kind.rawValue), "weight_decay": .float(Double(weightDecay))]
        if kind == .sgd {
            h["momentum"] = .float(Double(momentum))
            h["nesterov"] = .bool(nesterov)
        } else {
            h["beta1"] = .float(Double(beta1))
            h["beta2"] = .float(Double(beta2))
        }
        return h
    }
}

/// Learning-rate schedules, evaluated per step.
public struct Schedule: Sendable {
    public enum Kind: String, CaseIterable, Sendable { case cosine, step, constant }
    public var kind: Kind = .cosine
    public var baseLR: Float
    public var totalSteps: Int
    public var warmupSteps = 0
    /// For `step`: multiply by `gamma` every `stepEvery` steps.
    public var stepEvery = 0
    public var gamma: Float = 0.1

    public init(kind: Kind = .cosine, baseLR: Float, totalSteps: Int, warmupSteps: Int = 0) {
        self.kind = kind
        self.baseLR = baseLR
        self.totalSteps = totalSteps
        self.warmupSteps = warmupSteps
    }

    /// The rate for step `t` (0-based): linear warm-up, then cosine decay to 0, step decay, or constant.
    public func lr(at t: Int) -> Float {
        if t < warmupSteps { return baseLR * Float(t + 1) / Float(warmupSteps) }
        switch kind {
        case .constant: return baseLR
        case .step: return stepEvery > 0 ? baseLR * powf(gamma, Float((t - warmupSteps) / stepEvery)) : baseLR
        case .cosine:
            let span = max(1, totalSteps - warmupSteps)
            let progress = Float(min(t - warmupSteps, span)) / Float(span)
            return baseLR * 0.5 * (1 + cosf(Float.pi * progress))
        }
    }
}
