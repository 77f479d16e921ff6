import KDBundle
import KDData
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Hinton et al.'s specialists (METHODS.md §1): one model per group of confusable classes plus a
/// dustbin class, initialised from the generalist, trained on data where half the examples come
/// from the group; combined with the generalist by minimising a KL objective at inference.
public enum Specialists {
    public static let dustbin = "__dustbin__"
    public static let oversamplingKey = "kdtool.specialist.oversampling"

    /// The specialist's training data: the group's examples (relabelled 0..<n) repeated so they make
    /// up half of the set, every other example once with the dustbin label n. Returns the data and
    /// the oversampling factor of the group's examples.
    public static func trainingSet(_ d: Dataset, group: [Int]) -> (Dataset, Double) {
        let index = Dictionary(uniqueKeysWithValues: group.enumerated().map { ($1, $0) })
        let inGroup = (0..<d.count).filter { index[d.labels[$0]] != nil }
        let others = (0..<d.count).filter { index[d.labels[$0]] == nil }
        let factor = inGroup.isEmpty ? 1 : max(1, Double(others.count) / Double(inGroup.count))
        let repeats = Int(factor.rounded())
        var order: [Int] = []
        for _ in 0..<repeats { order += inGroup }
        order += others
        var s = d.subset(order, split: d.split)
        s.labels = order.map { index[d.labels[$0]] ?? group.count }
        s.classes = group.map { d.classes[$0] } + [dustbin]
        return (s, Double(repeats))
    }

    /// A specialist initialised from the generalist: every layer copied, the output layer reduced to
    /// the group's rows plus a dustbin row (the mean of the other rows, bias + log of their count, so
    /// its probability starts near the others' total).
    public static func initialise(from generalist: Model, group: [Int], classes: [String]) throws -> Model {
        guard let last = generalist.graph.nodes.last(where: { $0.op == .linear }), last.outputs == generalist.graph.outputs,
            last.inputs.count == 3, let w = generalist.parameters[last.inputs[1]], let b = generalist.parameters[last.inputs[2]]
        else { throw DistillError("the generalist's output is not a linear layer with bias; cannot derive specialists") }
        let (k, f) = (w.shape[0], w.shape[1])
        let others = (0..<k).filter { !group.contains($0) }
        let n = group.count + 1
        let nw = Tensor(zeros: [n, f])
        let nb = Tensor(zeros: [n])
        for (row, c) in group.enumerated() {
            for j in 0..<f { nw[row * f + j] = w[c * f + j] }
            nb[row] = b[c]
        }
        for o in others {
            for j in 0..<f { nw[group.count * f + j] += w[o * f + j] / Float(others.count) }
            nb[group.count] += b[o] / Float(others.count)
        }
        nb[group.count] += log(Float(max(others.count, 1)))
        var params = generalist.parameters.mapValues { $0.copy() }
        params[last.inputs[1]] = nw
        params[last.inputs[2]] = nb
        var graph = generalist.graph
        graph.outputKind = .softmax
        return try Model(
            graph: graph, parameters: params, buffers: generalist.buffers.mapValues { $0.copy() }, frozen: generalist.frozen,
            labels: Labels(group.map { classes[$0] } + [dustbin]), preprocessing: generalist.preprocessing,
            fspPairs: generalist.fspPairs, hints: generalist.hints, metadata: generalist.metadata)
    }

    /// Undoes the biased mix: the dustbin logit is raised by log(oversampling factor).
    public static func correctDustbin(_ model: Model, oversampling: Double) {
        guard let last = model.graph.nodes.last(where: { $0.op == .linear }), last.inputs.count == 3,
            let b = model.parameters[last.inputs[2]]
        else { return }
        b[b.count - 1] += Float(log(oversampling))
        model.metadata[oversamplingKey] = .float(oversampling)
    }

    /// The objective KL(p_g ‖ q) + Σ_m KL(p_m ‖ q_m) at q = softmax(r), where q_m collapses q onto
    /// specialist m's classes plus its dustbin (the sum of q over every other class), and its
    /// gradient with respect to r. `specialists` pairs each distribution (group classes then dustbin)
    /// with its group.
    public static func objective(r: [Double], generalist p: [Double], specialists: [(p: [Double], group: [Int])]) -> (Double, [Double]) {
        let k = r.count
        let m = r.max() ?? 0
        var q = r.map { exp($0 - m) }
        let z = q.reduce(0, +)
        for i in 0..<k { q[i] /= z }
        var value = 0.0
        var grad = [Double](repeating: 0, count: k)
        for i in 0..<k where p[i] > 0 { value += p[i] * (log(p[i]) - log(max(q[i], 1e-300))) }
        for i in 0..<k { grad[i] += q[i] - p[i] }
        for s in specialists {
            let inGroup = Set(s.group)
            let dust = (0..<k).filter { !inGroup.contains($0) }.reduce(0.0) { $0 + q[$1] }
            let pd = s.p[s.group.count]
            for (j, c) in s.group.enumerated() where s.p[j] > 0 { value += s.p[j] * (log(s.p[j]) - log(max(q[c], 1e-300))) }
            if pd > 0 { value += pd * (log(pd) - log(max(dust, 1e-300))) }
            var target = [Double](repeating: 0, count: k)
            for (j, c) in s.group.enumerated() { target[c] = s.p[j] }
            for i in 0..<k where !inGroup.contains(i) { target[i] = dust > 0 ? pd * q[i] / dust : 0 }
            for i in 0..<k { grad[i] += q[i] - target[i] }
        }
        return (value, grad)
    }

    /// Minimises `objective` by gradient descent on free logits r, starting from log p_g; returns q.
    public static func combine(generalist p: [Double], specialists: [(p: [Double], group: [Int])], steps: Int = 300, rate: Double = 0.5)
        -> [Double]
    {
        var r = p.map { log(max($0, 1e-12)) }
        guard !specialists.isEmpty else { return p }
        let lr = rate / Double(1 + specialists.count)
        for _ in 0..<steps {
            let (_, g) = objective(r: r, generalist: p, specialists: specialists)
            for i in 0..<r.count { r[i] -= lr * g[i] }
        }
        let m = r.max() ?? 0
        let e = r.map { exp($0 - m) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }
}
