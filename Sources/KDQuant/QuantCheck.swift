import KDBundle
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// fp32 and quantized models run side by side on the same batches: per-layer output error and
/// per-model agreement, accuracy and KL of the output distributions.
///
///     var cmp = QuantComparison(reference: fp32, quantized: q, weightSQNR: qb.weightSQNR)
///     for b in batches { try cmp.add(b.inputs, labels: b.labels) }
///     print(cmp.report.accuracyDrop)
public struct QuantComparison {
    public struct Layer: Sendable {
        public var node: String
        public var op: String
        public var weights: [String]
        /// Worst weight SQNR of the layer's weight tensors (dB); nil when it has none quantized.
        public var weightSQNR: Double?
        /// SQNR of the layer's output, quantized model against fp32, accumulated over all images (dB).
        public var activationSQNR: Double
        public var maxAbsError: Double
        public var meanAbsError: Double
    }

    public struct Report: Sendable {
        public var layers: [Layer]
        public var count: Int
        public var agreement: Double
        public var accuracyFP32: Double
        public var accuracyQuantized: Double
        /// Mean KL(fp32 ‖ quantized) of the output distributions (nats per image).
        public var kl: Double
        /// fp32 minus quantized accuracy, in percentage points.
        public var accuracyDrop: Double { 100 * (accuracyFP32 - accuracyQuantized) }
    }

    struct Acc {
        var signal = 0.0
        var noise = 0.0
        var maxAbs = 0.0
        var sumAbs = 0.0
        var n = 0
    }

    let reference: Model
    let quantized: Model
    let weightSQNR: [String: Double]
    let nodes: [Graph.Node]
    var acc: [Acc]
    var count = 0
    var agree = 0
    var correctReference = 0
    var correctQuantized = 0
    var klSum = 0.0

    public init(reference: Model, quantized: Model, weightSQNR: [String: Double]) {
        self.reference = reference
        self.quantized = quantized
        self.weightSQNR = weightSQNR
        nodes = reference.order.filter { [.conv2d, .linear, .splitLinear].contains($0.op) }
        acc = Array(repeating: Acc(), count: nodes.count)
    }

    public mutating func add(_ x: Tensor, labels: [Int]) throws {
        var rng = RandomSource(seed: 0)
        let ta = Tape(recording: false)
        let tb = Tape(recording: false)
        let a = try reference.forward(x, training: false, tape: ta, rng: &rng)
        let b = try quantized.forward(x, training: false, tape: tb, rng: &rng)
        for (k, node) in nodes.enumerated() {
            guard let va = a.values[node.outputs[0]], let vb = b.values[node.outputs[0]] else { continue }
            let (p, q) = (ta.value(va), tb.value(vb))
            var s = acc[k]
            for i in 0..<min(p.count, q.count) {
                let r = Double(p.storage.pointer[i])
                let d = abs(r - Double(q.storage.pointer[i]))
                s.signal += r * r
                s.noise += d * d
                s.maxAbs = max(s.maxAbs, d)
                s.sumAbs += d
            }
            s.n += p.count
            acc[k] = s
        }
        let za = ta.value(a.output)
        let zb = tb.value(b.output)
        let n = za.shape[0]
        let k = za.count / max(n, 1)
        let sigmoid = reference.graph.outputKind == .sigmoid
        let pa = sigmoid ? Elementwise.sigmoid(za) : Softmax.forward(za)
        let pb = sigmoid ? Elementwise.sigmoid(zb) : Softmax.forward(zb)
        for i in 0..<n {
            var ba = 0
            var bb = 0
            for j in 1..<k {
                if za[i * k + j] > za[i * k + ba] { ba = j }
                if zb[i * k + j] > zb[i * k + bb] { bb = j }
            }
            if ba == bb { agree += 1 }
            if i < labels.count {
                if ba == labels[i] { correctReference += 1 }
                if bb == labels[i] { correctQuantized += 1 }
            }
            for j in 0..<k {
                klSum += Self.kl(Double(pa[i * k + j]), Double(pb[i * k + j]))
                if sigmoid { klSum += Self.kl(1 - Double(pa[i * k + j]), 1 - Double(pb[i * k + j])) }
            }
        }
        count += n
    }

    static func kl(_ p: Double, _ q: Double) -> Double {
        p > 0 ? p * (log(p) - log(max(q, 1e-30))) : 0
    }

    public var report: Report {
        let layers = nodes.enumerated().map { k, node -> Layer in
            let s = acc[k]
            let weights = node.op == .splitLinear ? stride(from: 1, to: node.inputs.count, by: 2).map { node.inputs[$0] } : [node.inputs[1]]
            let ws = weights.compactMap { weightSQNR[$0] }
            return Layer(
                node: node.name, op: node.op.rawValue, weights: weights, weightSQNR: ws.min(),
                activationSQNR: sqnrDB(signal: s.signal, noise: s.noise), maxAbsError: s.maxAbs,
                meanAbsError: s.n == 0 ? 0 : s.sumAbs / Double(s.n))
        }
        let c = Double(max(count, 1))
        return Report(
            layers: layers, count: count, agreement: Double(agree) / c, accuracyFP32: Double(correctReference) / c,
            accuracyQuantized: Double(correctQuantized) / c, kl: klSum / c)
    }
}
