import KDTensor

/// Hinton et al.'s distillation loss (METHODS.md §1):
/// L = (1 − α)·CE(y, softmax(z)) + α·T²·KL(p_T ‖ softmax(z/T)),
/// where p_T is the teacher's (or the mean of several teachers') softmax at temperature T. The T²
/// keeps the soft-target gradient, which scales as 1/T², comparable across temperatures.
public enum HintonLoss {
    public struct Parts {
        public var total: Float
        public var hard: Float
        public var soft: Float
        public var gradient: Tensor
    }

    /// `teacher` holds target probabilities [N, K] (already softened at `temperature`);
    /// `labels` nil means soft targets only (α = 1).
    public static func evaluate(student logits: Tensor, teacher: Tensor, labels: [Int]?, temperature: Float, alpha: Float) -> Parts {
        let a = labels == nil ? 1 : alpha
        let t = temperature
        // softCrossEntropy gives −Σ p log q_T and (q_T − p)/(N·T); KL = that − H(p).
        let (ce, softGrad) = Softmax.softCrossEntropy(logits: logits, targets: teacher, temperature: t)
        let n = logits.shape[0]
        var entropy: Double = 0
        for i in 0..<teacher.count where teacher[i] > 0 { entropy -= Double(teacher[i]) * Double(logf(teacher[i])) }
        let kl = ce - Float(entropy / Double(n))
        let grad = Tensor(uninitialized: logits.shape)
        let softScale = a * t * t
        for i in 0..<grad.count { grad[i] = softScale * softGrad[i] }
        var hard: Float = 0
        if let labels, a < 1 {
            let (h, hardGrad) = Softmax.crossEntropy(logits: logits, labels: labels)
            hard = h
            for i in 0..<grad.count { grad[i] += (1 - a) * hardGrad[i] }
        }
        return Parts(total: (1 - a) * hard + softScale * kl, hard: hard, soft: kl, gradient: grad)
    }

    /// Mean of the teachers' softmax(z/T), the soft target for several teachers.
    public static func softTargets(_ teacherLogits: [Tensor], temperature: Float) -> Tensor {
        let out = Tensor(zeros: teacherLogits[0].shape)
        let w = 1 / Float(teacherLogits.count)
        for z in teacherLogits {
            let p = Softmax.forward(z, temperature: temperature)
            for i in 0..<out.count { out[i] += w * p[i] }
        }
        return out
    }
}

#if canImport(Glibc)
    import Glibc
#endif
