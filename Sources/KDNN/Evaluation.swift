import KDTensor

/// Accuracy, loss, per-class accuracy and the confusion matrix of a model on a batch source.
public struct Evaluation: Sendable {
    public var count = 0
    public var correct = 0
    public var lossSum = 0.0
    /// confusion[true][predicted]
    public var confusion: [[Int]]

    public init(classes: Int) { confusion = Array(repeating: Array(repeating: 0, count: classes), count: classes) }

    public var accuracy: Double { count == 0 ? 0 : Double(correct) / Double(count) }
    public var loss: Double { count == 0 ? 0 : lossSum / Double(count) }
    public var perClassAccuracy: [Double?] {
        confusion.enumerated().map { k, row in
            let n = row.reduce(0, +)
            return n == 0 ? nil : Double(row[k]) / Double(n)
        }
    }

    /// Adds a batch of logits (read as softmax probabilities) against labels.
    public mutating func add(logits: Tensor, labels: [Int]) {
        let (n, k) = (logits.shape[0], logits.count / max(1, logits.shape[0]))
        let logp = Softmax.logSoftmax(logits)
        for i in 0..<n {
            var best = 0
            for j in 1..<k where logits[i * k + j] > logits[i * k + best] { best = j }
            let y = labels[i]
            if best == y { correct += 1 }
            if y < k { lossSum -= Double(logp[i * k + y]) }
            if y < confusion.count && best < confusion.count { confusion[y][best] += 1 }
            count += 1
        }
    }
}

extension Model {
    /// Evaluates on every batch of `source` (epoch 0, in order) without autograd. With `fused`,
    /// the weights are folded once into an `InferencePlan` (they must not change meanwhile).
    public func evaluate(_ source: BatchSource, classes: Int? = nil, fused: Bool = false) throws -> Evaluation {
        var e = Evaluation(classes: classes ?? classCount)
        let plan = fused ? try InferencePlan(self) : nil
        for b in source.prefetching(epoch: 0) { e.add(logits: try plan?.run(b.inputs) ?? predict(b.inputs), labels: b.labels) }
        return e
    }
}
