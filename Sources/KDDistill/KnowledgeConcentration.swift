import KDBundle
import KDData
import KDIO
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Knowledge Concentration (METHODS.md §5): specialist teachers with sigmoid outputs, one per
/// vertical (a subset of the classes), distilled into one student for all classes.
public enum KC {
    /// Student heads. `fc`: FC hidden + FC output. The SC variants split the hidden layer into one
    /// block per vertical that connects only to that vertical's outputs: `fc-sc` (FC hidden, SC
    /// output), `sc-sc` (the hidden layer is block-diagonal too: block v reads only the v-th slice of
    /// the features), `fc-sc-shared` (SC output blocks also read `shared` common hidden units).
    public enum Head: String, CaseIterable, Sendable {
        case keep, fc
        case fcSC = "fc-sc"
        case scSC = "sc-sc"
        case fcSCShared = "fc-sc-shared"
    }

    /// Self-paced scaling of the logits: y_i = γ · x_i / ‖x_v‖ over vertical v's logits, with one
    /// learnt γ per vertical or per class (initialised to √N_v).
    public enum SelfPaced: String, CaseIterable, Sendable {
        case off
        case classLevel = "class"
        case vertical
    }

    /// Verticals as class indices of a model with `classes` labels, from `kdtool verticals` JSON
    /// (`{"verticals": [{"name", "classes": [indices], "labels": [names]}]}`) or a VMAP section.
    /// Classes are matched by name when the file gives names.
    public static func verticals(json path: String, classes: [String]) throws -> VerticalMap {
        let bytes: [UInt8]
        do {
            bytes = try SafeFile.readAll(path, limit: 16 << 20)
        } catch let e as InputError {
            throw DistillError("\(path): cannot read the verticals file: \(e.message)", code: .data)
        }
        let doc: Any
        do {
            doc = try MiniJSON.parse(bytes)
        } catch {
            throw DistillError("\(path): not valid JSON (\(error))", code: .data)
        }
        guard let root = doc as? [String: Any], let list = root["verticals"] as? [Any] else {
            throw DistillError("\(path): expected an object with a \"verticals\" array", code: .data)
        }
        var out: [VerticalMap.Vertical] = []
        for (i, item) in list.enumerated() {
            guard let v = item as? [String: Any] else { throw DistillError("\(path): vertical \(i + 1) is not an object", code: .data) }
            let name = v["name"] as? String ?? "vertical\(i + 1)"
            var indices: [Int] = []
            if let labels = v["labels"] as? [Any] {
                for l in labels {
                    let s = l as? String ?? "\(l)"
                    guard let k = classes.firstIndex(of: s) else {
                        throw DistillError(
                            "\(path): vertical '\(name)' names class '\(s)', which the student does not have (\(classes.joined(separator: ", ")))"
                        )
                    }
                    indices.append(k)
                }
            } else if let cs = v["classes"] as? [Any] {
                for c in cs {
                    guard let k = c as? Double, k == k.rounded(), k >= 0, k < Double(classes.count) else {
                        throw DistillError("\(path): vertical '\(name)' names class \(c), outside the student's \(classes.count) classes")
                    }
                    indices.append(Int(k))
                }
            } else {
                throw DistillError("\(path): vertical '\(name)' lists neither \"labels\" nor \"classes\"")
            }
            out.append(.init(name: name, classes: indices))
        }
        let map = VerticalMap(out)
        try check(map, classes: classes.count, source: path)
        return map
    }

    /// Verticals must be non-empty and disjoint, and cover every class.
    public static func check(_ map: VerticalMap, classes: Int, source: String) throws {
        guard !map.verticals.isEmpty else { throw DistillError("\(source): no verticals") }
        var seen = Set<Int>()
        for v in map.verticals {
            guard !v.classes.isEmpty else { throw DistillError("\(source): vertical '\(v.name)' has no classes") }
            for c in v.classes {
                guard c >= 0, c < classes else { throw DistillError("\(source): vertical '\(v.name)' names class \(c) of \(classes)") }
                guard seen.insert(c).inserted else { throw DistillError("\(source): class \(c) is in more than one vertical") }
            }
        }
        guard seen.count == classes else {
            let missing = (0..<classes).filter { !seen.contains($0) }
            throw DistillError("\(source): classes \(missing) are in no vertical; the verticals must cover every class")
        }
    }

    /// Replaces the student's output layer (the last linear node) by `head` on the features that fed
    /// it: hidden width `width` per vertical (`shared` of them common with fc-sc-shared), outputs in
    /// vertical order, then the self-paced scaling, then a fixed permutation back to class order.
    /// What each structurally connected block of an `sc-sc` head's first layer reads: its own
    /// 1/M slice of the bottleneck (`split`, our default), or all of it (`all`, the paper's).
    public enum SCInput: String, CaseIterable, Sendable { case split, all }

    public static func attachHead(
        to model: Model, head: Head, verticals: VerticalMap, width: Int, shared: Int, selfPaced: SelfPaced, seed: UInt64,
        hiddenLayers: Int = 1, scInput: SCInput = .split, selfPacedEpsilon: Double = 1e-6
    ) throws -> Model {
        guard selfPacedEpsilon > 0, selfPacedEpsilon.isFinite else { throw DistillError("the self-paced ε must be positive") }
        guard (1...4).contains(hiddenLayers) else { throw DistillError("the head takes 1 to 4 hidden layers, not \(hiddenLayers)") }
        let classes = model.classCount
        guard let lastIndex = model.graph.nodes.lastIndex(where: { $0.op == .linear }),
            model.graph.nodes[lastIndex].outputs == model.graph.outputs
        else {
            throw DistillError("the student's output is not a linear layer; cannot attach a --head (use --head keep)")
        }
        let last = model.graph.nodes[lastIndex]
        let features = last.inputs[0]
        let featureWidth = try FitNets.outputShape(model, node: model.graph.nodes.first { $0.outputs.contains(features) }?.name ?? "")
            .reduce(1, *)
        let sizes = verticals.verticals.map(\.classes.count)
        let m = sizes.count
        var b = GraphBuilder(input: [featureWidth])
        var x = b.inputName
        let p = "kc_head"
        // Hidden layer k (1-based) is named hidden/relu for k = 1 (as before) and hiddenK/reluK after.
        func suffix(_ k: Int) -> String { k == 1 ? "" : "\(k)" }
        let blocks = Array(repeating: width, count: m)
        switch head {
        case .keep:
            x = b.linear("\(p).out", x, out: classes)
        case .fc:
            for k in 1...hiddenLayers { x = b.relu("\(p).relu\(suffix(k))", b.linear("\(p).hidden\(suffix(k))", x, out: width * m)) }
            x = b.linear("\(p).out", x, out: classes)
        case .fcSC:
            for k in 1...hiddenLayers { x = b.relu("\(p).relu\(suffix(k))", b.linear("\(p).hidden\(suffix(k))", x, out: width * m)) }
            x = b.splitLinear("\(p).out", x, inSplits: blocks, shared: 0, outs: sizes)
        case .scSC:
            guard featureWidth >= m else { throw DistillError("sc-sc needs at least \(m) features to split, got \(featureWidth)") }
            // The first layer's blocks read their own slice of the bottleneck, or (the paper's) all of it as shared features.
            let (slices, sharedIn) =
                scInput == .all
                ? (Array(repeating: 0, count: m), featureWidth) : ((0..<m).map { featureWidth / m + ($0 < featureWidth % m ? 1 : 0) }, 0)
            x = b.relu("\(p).relu", b.splitLinear("\(p).hidden", x, inSplits: slices, shared: sharedIn, outs: blocks))
            if hiddenLayers > 1 {
                for k in 2...hiddenLayers {
                    x = b.relu("\(p).relu\(k)", b.splitLinear("\(p).hidden\(k)", x, inSplits: blocks, shared: 0, outs: blocks))
                }
            }
            x = b.splitLinear("\(p).out", x, inSplits: blocks, shared: 0, outs: sizes)
        case .fcSCShared:
            guard shared > 0, shared < width else { throw DistillError("fc-sc-shared needs 0 < --shared-width < --head-width") }
            for k in 1...hiddenLayers {
                x = b.relu("\(p).relu\(suffix(k))", b.linear("\(p).hidden\(suffix(k))", x, out: (width - shared) * m + shared))
            }
            x = b.splitLinear("\(p).out", x, inSplits: Array(repeating: width - shared, count: m), shared: shared, outs: sizes)
        }
        if selfPaced != .off {
            let gamma: [Float] =
                selfPaced == .vertical
                ? sizes.map { Float($0).squareRoot() } : sizes.flatMap { n in Array(repeating: Float(n).squareRoot(), count: n) }
            x = b.l2normScale("\(p).self_paced", x, groups: sizes, gamma: gamma, epsilon: selfPacedEpsilon)
        }
        // Outputs are in vertical order; row c of the permutation picks class c's position.
        let order = verticals.verticals.flatMap(\.classes)
        if order != Array(0..<classes) {
            var w = [Float](repeating: 0, count: classes * classes)
            for (position, c) in order.enumerated() { w[c * classes + position] = 1 }
            x = b.fixedLinear("\(p).class_order", x, weight: w, out: classes)
        }
        let (params, buffers) = b.initialize(.torch, seed: seed)
        var nodes = model.graph.nodes
        nodes.remove(at: lastIndex)
        nodes += b.nodes(attachingInputTo: features)
        var parameters = model.parameters
        for name in last.inputs.dropFirst() { parameters[name] = nil }
        parameters.merge(params) { _, new in new }
        let graph = Graph(inputs: model.graph.inputs, outputs: [x], outputKind: .sigmoid, nodes: nodes)
        return try Model(
            graph: graph, parameters: parameters, buffers: model.buffers.merging(buffers) { _, n in n },
            frozen: model.frozen.union(b.fixedWeights), labels: model.labels ?? Labels((0..<classes).map(String.init)),
            preprocessing: model.preprocessing,
            fspPairs: model.fspPairs, hints: model.hints, verticals: verticals, provenance: model.provenance, metadata: model.metadata)
    }

    /// Mean over the batch of Σ_k −t_k log σ(z_k) − (1 − t_k) log(1 − σ(z_k)), and its gradient
    /// (σ(z) − t)/N; computed stably from the logits.
    public static func sigmoidCrossEntropy(logits z: Tensor, targets t: Tensor) -> (Float, Tensor) {
        let n = Float(z.shape[0])
        let g = Tensor(uninitialized: z.shape)
        var s: Double = 0
        for i in 0..<z.count {
            let x = z[i]
            // −t log σ(x) − (1 − t) log(1 − σ(x)) = max(x, 0) − x t + log(1 + e^{−|x|})
            s += Double(max(x, 0) - x * t[i] + log1p(exp(-abs(x))))
            let sig = x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
            g[i] = (sig - t[i]) / n
        }
        return (Float(s / Double(n)), g)
    }

    /// The soft target row for an example of class `label`: the probabilities of the teacher owning
    /// its vertical, zero outside that vertical and below the teacher's top-K (K capped at the vertical).
    public static func softTargets(teacher probabilities: [Float], vertical: [Int], topK: Int, classes: Int) -> [Float] {
        var row = [Float](repeating: 0, count: classes)
        let k = min(max(topK, 0), vertical.count)
        let ranked = probabilities.indices.sorted {
            probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1)
        }
        for j in ranked.prefix(k) { row[vertical[j]] = probabilities[j] }
        return row
    }

    /// Average precision of `scores` for the positives `relevant` (ties broken by index): the mean
    /// of the precision at the rank of each positive. nil when there is no positive.
    public static func averagePrecision(scores: [Float], relevant: [Bool]) -> Double? {
        let positives = relevant.filter { $0 }.count
        guard positives > 0 else { return nil }
        let order = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        var hits = 0
        var sum = 0.0
        for (rank, i) in order.enumerated() where relevant[i] {
            hits += 1
            sum += Double(hits) / Double(rank + 1)
        }
        return sum / Double(positives)
    }
}

/// The specialist teachers' soft targets per training example, computed without autograd; without
/// augmentation they depend only on the example, so they are cached across epochs.
public final class KCTeachers {
    let plans: [InferencePlan]
    let owner: [Int]
    let verticals: VerticalMap
    let topK: Int
    let classes: Int
    let cache: Bool
    private var stored: [Int: [Float]] = [:]
    public private(set) var computed = 0
    public private(set) var reused = 0

    /// `teachers[v]` owns `verticals.verticals[v]` (its outputs are that vertical's classes, in order).
    public init(teachers: [Model], verticals: VerticalMap, topK: Int, classes: Int, cacheAcrossEpochs: Bool) throws {
        plans = try teachers.map { try InferencePlan($0) }
        var owner = [Int](repeating: -1, count: classes)
        for (v, vertical) in verticals.verticals.enumerated() { for c in vertical.classes { owner[c] = v } }
        self.owner = owner
        self.verticals = verticals
        self.topK = topK
        self.classes = classes
        self.cache = cacheAcrossEpochs
    }

    public func targets(_ batch: Batch) throws -> Tensor {
        let n = batch.indices.count
        let out = Tensor(zeros: [n, classes])
        var missing: [Int] = []
        for (row, i) in batch.indices.enumerated() {
            if cache, let t = stored[i] {
                (out.pointer + row * classes).update(from: t, count: classes)
                reused += 1
            } else {
                missing.append(row)
            }
        }
        guard !missing.isEmpty else { return out }
        // Each teacher runs on the whole batch once; each example takes the row of its label's teacher.
        let probs = try plans.map { try $0.probabilities(batch.inputs) }
        for row in missing {
            let v = owner[batch.labels[row]]
            let vertical = verticals.verticals[v].classes
            let p = probs[v]
            let width = vertical.count
            let t = KC.softTargets(
                teacher: Array(UnsafeBufferPointer(start: p.pointer + row * width, count: width)), vertical: vertical, topK: topK,
                classes: classes)
            (out.pointer + row * classes).update(from: t, count: classes)
            if cache { stored[batch.indices[row]] = t }
            computed += 1
        }
        return out
    }
}

extension Trainer {
    /// Knowledge Concentration: sigmoid cross-entropy of the student against the specialists' targets.
    public func concentrate(from teachers: KCTeachers) {
        stage = "kc"
        objective = { batch, f in
            let (loss, grad) = KC.sigmoidCrossEntropy(logits: f.tape.value(f.output), targets: try teachers.targets(batch))
            return (loss, [(f.output, grad)])
        }
    }

    /// Training with sigmoid outputs (a specialist teacher): sigmoid cross-entropy on one-hot labels.
    public func trainSigmoid() {
        stage = "train-sigmoid"
        objective = { batch, f in
            let z = f.tape.value(f.output)
            let k = z.shape[1]
            let t = Tensor(zeros: z.shape)
            for (i, y) in batch.labels.enumerated() where y < k { t[i * k + y] = 1 }
            let (loss, grad) = KC.sigmoidCrossEntropy(logits: z, targets: t)
            return (loss, [(f.output, grad)])
        }
    }
}
