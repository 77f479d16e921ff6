import KDBundle
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// "A Gift from Knowledge Distillation" (METHODS.md §3). The FSP matrix of two feature maps
/// F1 (m×h×w) and F2 (n×h×w) of one network is G_ij = Σ_{s,t} F1_{i,s,t}·F2_{j,s,t} / (h·w); when the
/// two maps differ in spatial size the larger is max-pooled to the smaller. Stage 1 minimises
/// L = (1/N) Σ_x Σ_i λ_i ‖G_i^T(x) − G_i^S(x)‖²₂ (equal λ_i = 1); stage 2 is the task loss.
public enum FSP {
    /// One FSP pair as resolved on a model: its two values, their shapes (C×H×W) and the max-pool
    /// factor that brings the larger map to the smaller one's size (1: none).
    public struct ResolvedPair: Sendable, CustomStringConvertible {
        public let first: String
        public let second: String
        public let firstShape: [Int]
        public let secondShape: [Int]
        public let firstPool: Int
        public let secondPool: Int
        public var rows: Int { firstShape[0] }
        public var columns: Int { secondShape[0] }
        public var description: String { "\(first)\(firstShape):\(second)\(secondShape)" }
    }

    /// Parses `a:b,c:d`.
    public static func parsePairs(_ text: String) throws -> [FSPPairs.Pair] {
        try text.split(separator: ",").map { item in
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw DistillError(code: .layer, "FSP pair '\(item)' is not FIRST:SECOND")
            }
            return FSPPairs.Pair(parts[0], parts[1])
        }
    }

    /// Output shapes (without batch) of every value of `model`, by value name.
    static func valueShapes(_ model: Model) throws -> [String: [Int]] {
        let shapes = Dictionary(
            uniqueKeysWithValues: model.tensorNames.compactMap { name in
                (model.parameters[name] ?? model.buffers[name]).map { (name, $0.shape) }
            })
        var out: [String: [Int]] = [:]
        for s in try model.graph.stats(tensorShapes: shapes, batch: 1) {
            for o in s.node.outputs { out[o] = Array(s.outputShape.dropFirst()) }
        }
        return out
    }

    /// The value a pair member names: a value, or a node (its first output).
    static func valueName(_ name: String, in model: Model, shapes: [String: [Int]]) -> String? {
        if shapes[name] != nil { return name }
        return model.graph.node(named: name)?.outputs.first
    }

    /// Resolves `pairs` on `model` (named `label` in errors): both members must exist and be
    /// feature maps whose spatial sizes differ by a whole factor.
    public static func resolve(_ pairs: [FSPPairs.Pair], on model: Model, label: String) throws -> [ResolvedPair] {
        let shapes = try valueShapes(model)
        return try pairs.map { p in
            var names: [String] = []
            for n in [p.first, p.second] {
                guard let v = valueName(n, in: model, shapes: shapes) else {
                    let known = model.graph.nodes.map(\.name)
                    throw DistillError(
                        code: .layer,
                        "\(label): FSP pair \(p.first):\(p.second) names '\(n)', which is not a layer of the model (layers: \(known.prefix(10).joined(separator: ", "))\(known.count > 10 ? ", …" : ""))"
                    )
                }
                names.append(v)
            }
            var (a, b) = (shapes[names[0]]!, shapes[names[1]]!)
            if a.count == 1 { a += [1, 1] }
            if b.count == 1 { b += [1, 1] }
            guard a.count == 3, b.count == 3 else {
                throw DistillError(code: .layer, "\(label): FSP pair \(p.first) \(a):\(p.second) \(b) is not two feature maps (C×H×W)")
            }
            let fa = factor(a, over: b)
            let fb = factor(b, over: a)
            guard let fa, let fb else {
                throw DistillError(
                    code: .layer,
                    "\(label): FSP pair \(p.first) \(a):\(p.second) \(b): the spatial sizes do not differ by a whole factor, so max-pooling cannot match them"
                )
            }
            return ResolvedPair(first: names[0], second: names[1], firstShape: a, secondShape: b, firstPool: fa, secondPool: fb)
        }
    }

    /// The pooling factor that shrinks `a` to `b`'s spatial size (1 when `a` is not larger; nil when impossible).
    static func factor(_ a: [Int], over b: [Int]) -> Int? {
        if a[1] <= b[1] && a[2] <= b[2] { return b[1] % a[1] == 0 && b[2] % a[2] == 0 && b[1] / a[1] == b[2] / a[2] ? 1 : nil }
        guard a[1] % b[1] == 0, a[2] % b[2] == 0, a[1] / b[1] == a[2] / b[2] else { return nil }
        return a[1] / b[1]
    }

    /// Checked when distillation starts: as many pairs on both sides, and FSP matrices of equal m×n.
    public static func check(teacher: [ResolvedPair], student: [ResolvedPair], teacherName: String, studentName: String) throws {
        guard !teacher.isEmpty else {
            throw DistillError(code: .layer, "no FSP pairs: the bundles declare none (FSPP); give them with --fsp-pairs")
        }
        guard teacher.count == student.count else {
            throw DistillError(
                code: .layer,
                "teacher \(teacherName) has \(teacher.count) FSP pairs but student \(studentName) has \(student.count); give matching lists with --fsp-pairs / --teacher-fsp-pairs"
            )
        }
        for (t, s) in zip(teacher, student) where t.rows != s.rows || t.columns != s.columns {
            throw DistillError(
                code: .layer,
                "FSP matrices differ in size: teacher pair \(t) gives \(t.rows)×\(t.columns) but student pair \(s) gives \(s.rows)×\(s.columns)"
            )
        }
    }

    /// The pooling window that shrinks a map by `factor`.
    public static func poolWindow(_ factor: Int) -> Window {
        Window(kernel: [factor, factor], stride: [factor, factor], pads: [0, 0, 0, 0])
    }

    /// FSP matrices of a batch: f1 [N, m, h, w] (or [N, m]), f2 [N, n, h, w] → [N, m, n].
    public static func matrices(_ f1: Tensor, _ f2: Tensor) throws -> Tensor {
        let (n, m, hw) = try dims(f1)
        let (n2, c, hw2) = try dims(f2)
        guard n == n2, hw == hw2 else { throw TensorError("FSP of \(f1.shape) and \(f2.shape): batch or spatial size differs") }
        let g = Tensor(uninitialized: [n, m, c])
        for i in 0..<n {
            // G = F1 · F2ᵀ / (h·w) with F1 [m, hw], F2 [c, hw]
            BLAS.gemm(
                transB: true, m: m, n: c, k: hw, alpha: 1 / Float(hw), a: f1.pointer + i * m * hw, lda: hw, b: f2.pointer + i * c * hw,
                ldb: hw, c: g.pointer + i * m * c, ldc: c, threads: 1)
        }
        return g
    }

    /// Gradients of a loss through `matrices`: dF1 = dG · F2 / hw, dF2 = dGᵀ · F1 / hw.
    public static func backward(_ dG: Tensor, _ f1: Tensor, _ f2: Tensor) throws -> (Tensor, Tensor) {
        let (n, m, hw) = try dims(f1)
        let (_, c, _) = try dims(f2)
        let d1 = Tensor(uninitialized: f1.shape)
        let d2 = Tensor(uninitialized: f2.shape)
        for i in 0..<n {
            BLAS.gemm(
                m: m, n: hw, k: c, alpha: 1 / Float(hw), a: dG.pointer + i * m * c, lda: c, b: f2.pointer + i * c * hw, ldb: hw,
                c: d1.pointer + i * m * hw, ldc: hw, threads: 1)
            BLAS.gemm(
                transA: true, m: c, n: hw, k: m, alpha: 1 / Float(hw), a: dG.pointer + i * m * c, lda: c, b: f1.pointer + i * m * hw,
                ldb: hw, c: d2.pointer + i * c * hw, ldc: hw, threads: 1)
        }
        return (d1, d2)
    }

    static func dims(_ t: Tensor) throws -> (Int, Int, Int) {
        switch t.rank {
        case 2: return (t.shape[0], t.shape[1], 1)
        case 4: return (t.shape[0], t.shape[1], t.shape[2] * t.shape[3])
        default: throw TensorError("FSP needs feature maps [N, C, H, W] or [N, C], got \(t.shape)")
        }
    }

    /// L = (1/N) Σ_x Σ_i λ_i ‖G_i^T(x) − G_i^S(x)‖² and dL/dG_i^S for each pair.
    public static func loss(student: [Tensor], teacher: [Tensor], weights: [Float]? = nil) -> (Float, [Tensor]) {
        var total: Double = 0
        var grads: [Tensor] = []
        for (i, (s, t)) in zip(student, teacher).enumerated() {
            let n = Float(s.shape[0])
            let lambda = weights?[i] ?? 1
            let g = Tensor(uninitialized: s.shape)
            var sum: Double = 0
            for j in 0..<s.count {
                let d = s[j] - t[j]
                sum += Double(d * d)
                g[j] = 2 * lambda * d / n
            }
            total += Double(lambda) * sum / Double(n)
            grads.append(g)
        }
        return (Float(total), grads)
    }

    /// Applies channel permutations to FSP matrices [N, m, n]: G'_ij = G_{rows[i], cols[j]}.
    public static func permute(_ g: Tensor, rows: [Int], columns: [Int]) -> Tensor {
        let (n, m, c) = (g.shape[0], g.shape[1], g.shape[2])
        let out = Tensor(uninitialized: g.shape)
        for x in 0..<n {
            for i in 0..<m {
                for j in 0..<c { out[(x * m + i) * c + j] = g[(x * m + rows[i]) * c + columns[j]] }
            }
        }
        return out
    }

    /// Channel spaces of a model's values: values whose channels must be permuted together for the
    /// network to stay equivalent (through ReLU, batch norm, pooling, dropout and the two sides of an
    /// identity `add`). Returns a representative per value.
    public static func channelSpaces(_ model: Model) -> [String: String] {
        var parent: [String: String] = [:]
        func find(_ v: String) -> String {
            var r = v
            while let p = parent[r], p != r { r = p }
            return r
        }
        func union(_ a: String, _ b: String) {
            let (ra, rb) = (find(a), find(b))
            if ra != rb { parent[ra] = rb }
        }
        for node in model.graph.nodes {
            for o in node.outputs where parent[o] == nil { parent[o] = o }
            switch node.op {
            case .relu, .batchnorm, .maxpool, .avgpool, .globalavgpool, .dropout, .sigmoid:
                if parent[node.inputs[0]] != nil { union(node.inputs[0], node.outputs[0]) }
            case .add:
                for i in node.inputs where parent[i] != nil { union(i, node.outputs[0]) }
            default: break
            }
        }
        return Dictionary(uniqueKeysWithValues: parent.keys.map { ($0, find($0)) })
    }

    /// `--shuffle-fsp SEED`: one random channel permutation per channel space of the teacher, so
    /// the permuted FSP matrices are those of an equivalent teacher (same function, channels renamed).
    public static func shufflePermutations(_ pairs: [ResolvedPair], model: Model, seed: UInt64) -> [(rows: [Int], columns: [Int])] {
        let spaces = channelSpaces(model)
        var perms: [String: [Int]] = [:]
        var rng = RandomSource(seed: seed, stream: 0xf5b)
        func perm(_ value: String, _ count: Int) -> [Int] {
            let key = spaces[value] ?? value
            if let p = perms[key], p.count == count { return p }
            let p = rng.permutation(count)
            perms[key] = p
            return p
        }
        return pairs.map { p in (perm(p.first, p.rows), perm(p.second, p.columns)) }
    }
}

/// The teacher's FSP matrices for training batches, computed without autograd; without augmentation
/// a batch's matrices depend only on its examples, so they are cached per example and reused.
public final class TeacherFSP {
    let teacher: Model
    /// The teacher on the inference plan (folded batch norm, Winograd), keeping the pairs' maps.
    let plan: InferencePlan
    let pairs: [FSP.ResolvedPair]
    let permutations: [(rows: [Int], columns: [Int])]?
    let cache: Bool
    private var stored: [Int: [[Float]]] = [:]
    public private(set) var computed = 0
    public private(set) var reused = 0

    public init(teacher: Model, pairs: [FSP.ResolvedPair], permutations: [(rows: [Int], columns: [Int])]?, cacheAcrossEpochs: Bool)
        throws
    {
        self.teacher = teacher
        plan = try InferencePlan(teacher, keep: Set(pairs.flatMap { [$0.first, $0.second] }))
        self.pairs = pairs
        self.permutations = permutations
        self.cache = cacheAcrossEpochs
    }

    public func matrices(_ batch: Batch) throws -> [Tensor] {
        let n = batch.indices.count
        if cache, batch.indices.allSatisfy({ stored[$0] != nil }) {
            reused += n
            return pairs.enumerated().map { k, p in
                Tensor(shape: [n, p.rows, p.columns], values: batch.indices.flatMap { stored[$0]![k] })
            }
        }
        let maps = try plan.run(batch.inputs, keeping: Array(Set(pairs.flatMap { [$0.first, $0.second] })).sorted()).values
        var out: [Tensor] = []
        for (k, p) in pairs.enumerated() {
            guard var a = maps[p.first], var b = maps[p.second] else {
                throw DistillError(code: .layer, "FSP pair \(p.first):\(p.second) has no value")
            }
            if p.firstPool > 1 { a = try Pooling.maxForward(a, FSP.poolWindow(p.firstPool)).y }
            if p.secondPool > 1 { b = try Pooling.maxForward(b, FSP.poolWindow(p.secondPool)).y }
            var g = try FSP.matrices(a, b)
            if let perm = permutations?[k] { g = FSP.permute(g, rows: perm.rows, columns: perm.columns) }
            out.append(g)
        }
        computed += n
        if cache {
            for (row, i) in batch.indices.enumerated() {
                stored[i] = zip(out, pairs).map { g, p in
                    let size = p.rows * p.columns
                    return Array(UnsafeBufferPointer(start: g.pointer + row * size, count: size))
                }
            }
        }
        return out
    }
}

extension Trainer {
    /// FSP stage 1: the student's FSP matrices (pairs resolved on the student) against the teacher's.
    public func fspTraining(teacher: TeacherFSP, studentPairs: [FSP.ResolvedPair]) {
        stage = "fsp"
        objectiveReads = Set(studentPairs.flatMap { [$0.first, $0.second] })
        objective = { batch, f in
            let tape = f.tape
            var sides: [(Var, Var)] = []
            var matrices: [Tensor] = []
            for p in studentPairs {
                guard var a = f.values[p.first], var b = f.values[p.second] else {
                    throw DistillError(code: .layer, "FSP value \(p) not computed")
                }
                if p.firstPool > 1 { a = try tape.maxpool(a, FSP.poolWindow(p.firstPool)) }
                if p.secondPool > 1 { b = try tape.maxpool(b, FSP.poolWindow(p.secondPool)) }
                sides.append((a, b))
                matrices.append(try FSP.matrices(tape.value(a), tape.value(b)))
            }
            let (loss, dG) = FSP.loss(student: matrices, teacher: try teacher.matrices(batch))
            var seeds: [(Var, Tensor)] = []
            for ((a, b), g) in zip(sides, dG) {
                let (da, db) = try FSP.backward(g, tape.value(a), tape.value(b))
                seeds.append((a, da))
                seeds.append((b, db))
            }
            return (loss, seeds)
        }
    }
}

extension String {
    public var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

extension FSP {
    /// The convolutions whose output goes straight into a batch norm: (weight, bias?, the batch
    /// norm's running mean and variance).
    static func convsBeforeBatchNorm(_ model: Model) -> [(weight: String, bias: String?, mean: String, variance: String)] {
        var producer: [String: Graph.Node] = [:]
        for n in model.graph.nodes { for o in n.outputs { producer[o] = n } }
        return model.graph.nodes.compactMap { bn in
            guard bn.op == .batchnorm, bn.inputs.count == 5, let conv = producer[bn.inputs[0]], conv.op == .conv2d else { return nil }
            return (conv.inputs[1], conv.inputs.count > 2 ? conv.inputs[2] : nil, bn.inputs[3], bn.inputs[4])
        }
    }

    /// The Frobenius norm of every convolution weight that feeds a batch norm.
    public static func convNorms(_ model: Model) -> [String: Float] {
        var out: [String: Float] = [:]
        for c in convsBeforeBatchNorm(model) {
            guard let w = model.parameters[c.weight] else { continue }
            out[c.weight] = (0..<w.count).reduce(Float(0)) { $0 + w[$1] * w[$1] }.squareRoot()
        }
        return out
    }

    /// Rescales each convolution that feeds a batch norm (weight and bias) back to the norm it had
    /// in `norms`, and resets that batch norm's running statistics (mean 0, variance 1). Under batch
    /// norm the layer computes the same function in training mode, but the gradients — and so the
    /// effective learning rate — are those of weights at their initial scale again. Returns each
    /// weight's norm before and after.
    @discardableResult
    public static func rescale(_ model: Model, to norms: [String: Float]) -> [(name: String, before: Float, after: Float)] {
        var report: [(String, Float, Float)] = []
        for c in convsBeforeBatchNorm(model) {
            guard let w = model.parameters[c.weight], let target = norms[c.weight] else { continue }
            let norm = (0..<w.count).reduce(Float(0)) { $0 + w[$1] * w[$1] }.squareRoot()
            guard norm > 0, target > 0 else { continue }
            let k = target / norm
            for i in 0..<w.count { w[i] *= k }
            if let bias = c.bias, let b = model.parameters[bias] { for i in 0..<b.count { b[i] *= k } }
            model.buffers[c.mean]?.fill(0)
            model.buffers[c.variance]?.fill(1)
            report.append((c.weight, norm, target))
        }
        return report
    }
}
