import Foundation
import KDBundle
import KDData
import KDNN
import KDTensor

/// Several models on the same images: each one's evaluation, and the ensemble's — the mean of
/// their softmax distributions (the "ensemble" of Hinton et al. and of DML-e).
public enum Ensemble {
    public struct Result: Sendable {
        public var members: [Evaluation]
        public var ensemble: Evaluation
        public var meanMemberAccuracy: Double { members.map(\.accuracy).reduce(0, +) / Double(max(members.count, 1)) }
    }

    public static func evaluate(_ models: [Model], on data: Dataset, normalization: Normalization, batchSize: Int = 256) throws -> Result {
        guard let first = models.first else { throw DistillError("an ensemble needs at least one model") }
        for m in models.dropFirst()
        where m.classCount != first.classCount || Array(m.inputShape.dropFirst()) != Array(first.inputShape.dropFirst()) {
            throw DistillError(code: .incompatible, "an ensemble's members must share the task: inputs and classes differ")
        }
        let plans = try models.map { try InferencePlan($0) }
        var each = models.map { Evaluation(classes: $0.classCount) }
        var ensemble = Evaluation(classes: first.classCount)
        for b in Batcher(data, batchSize: batchSize, shuffle: false, normalization: normalization, seed: 0).prefetching(epoch: 0) {
            let outs = try plans.map { try $0.run(b.inputs) }
            let mean = Tensor(zeros: outs[0].shape)
            for (i, z) in outs.enumerated() {
                each[i].add(logits: z, labels: b.labels)
                let p = Softmax.forward(z)
                for j in 0..<p.count { mean[j] += p[j] / Float(outs.count) }
            }
            for j in 0..<mean.count { mean[j] = log(max(mean[j], 1e-30)) }
            ensemble.add(logits: mean, labels: b.labels)
        }
        return Result(members: each, ensemble: ensemble)
    }
}

extension KC {
    /// One vertical's average precision: over the images of its classes, the AP of the model's
    /// score for each of its classes, averaged.
    public struct VerticalAP: Sendable {
        public var name: String
        public var classes: [String]
        public var images: Int
        public var ap: Double
    }

    /// Per-vertical AP for every vertical the model covers (its labels name all the vertical's
    /// classes), and their mean (mAP). Verticals the model does not cover are left out; an empty
    /// result means it covers none.
    public static func verticalAP(
        _ model: Model, verticals: VerticalMap, data: Dataset, normalization: Normalization, batchSize: Int = 256
    ) throws -> [VerticalAP] {
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        let plan = try InferencePlan(model)
        let k = model.classCount
        var scores = [Float]()
        scores.reserveCapacity(data.count * k)
        for b in Batcher(data, batchSize: batchSize, shuffle: false, normalization: normalization, seed: 0).prefetching(epoch: 0) {
            scores += try plan.probabilities(b.inputs).array
        }
        var rows: [VerticalAP] = []
        for v in verticals.verticals {
            guard v.classes.allSatisfy({ $0 >= 0 && $0 < data.classes.count }) else { continue }
            let vClasses = v.classes.map { data.classes[$0] }
            let columns = vClasses.compactMap { names.firstIndex(of: $0) }
            guard columns.count == vClasses.count else { continue }
            let images = (0..<data.count).filter { v.classes.contains(data.labels[$0]) }
            var aps: [Double] = []
            for (c, col) in zip(v.classes, columns) {
                let relevant = images.map { data.labels[$0] == c }
                if let ap = averagePrecision(scores: images.map { scores[$0 * k + col] }, relevant: relevant) { aps.append(ap) }
            }
            rows.append(VerticalAP(name: v.name, classes: vClasses, images: images.count, ap: aps.reduce(0, +) / Double(max(aps.count, 1))))
        }
        return rows
    }
}

extension Specialists {
    /// A generalist and its specialists on the same images (Hinton et al. §5): accuracy of the
    /// generalist alone and of the combination, overall and by how many specialists cover the
    /// true class.
    public struct Evaluation: Sendable {
        public struct Row: Sendable {
            public var covering: Int
            public var images: Int
            public var generalistCorrect: Int
            public var combinedCorrect: Int
        }
        public var rows: [Row]
        public var total: Int
        public var generalistCorrect: Int
        public var combinedCorrect: Int
        public var generalistAccuracy: Double { Double(generalistCorrect) / Double(max(total, 1)) }
        public var combinedAccuracy: Double { Double(combinedCorrect) / Double(max(total, 1)) }
    }

    /// The generalist's class indices a specialist covers (its labels before the dustbin), or nil
    /// when the model is not a specialist; an error names a class the generalist does not have.
    public static func group(of specialist: Model, generalistClasses: [String], name: String) throws -> [Int]? {
        guard let labels = specialist.labels?.classes, labels.last == dustbin else { return nil }
        return try labels.dropLast().map { n in
            guard let k = generalistClasses.firstIndex(of: n) else {
                throw DistillError(code: .incompatible, "specialist \(name) has class '\(n)', which the generalist does not")
            }
            return k
        }
    }

    /// For each image, the specialists whose groups contain the generalist's top class take part
    /// in minimising KL(p_g ‖ q) + Σ_m KL(p_m ‖ q_m) (`combine`).
    public static func evaluate(
        generalist: Model, specialists: [(model: Model, group: [Int])], data: Dataset, normalization: Normalization,
        batchSize: Int = 256
    ) throws -> Evaluation {
        let plan = try InferencePlan(generalist)
        let plans = try specialists.map { try InferencePlan($0.model) }
        let k = generalist.classCount
        var byCover: [Int: Evaluation.Row] = [:]
        var (gCorrect, cCorrect, total) = (0, 0, 0)
        for b in Batcher(data, batchSize: batchSize, shuffle: false, normalization: normalization, seed: 0).prefetching(epoch: 0) {
            let pg = try plan.probabilities(b.inputs)
            let ps = try plans.map { Softmax.forward(try $0.run(b.inputs)) }
            for (i, y) in b.labels.enumerated() {
                let p = (0..<k).map { Double(pg[i * k + $0]) }
                let top = p.indices.max { p[$0] < p[$1] } ?? 0
                var active: [(p: [Double], group: [Int])] = []
                for (s, q) in zip(specialists, ps) where s.group.contains(top) {
                    let w = s.group.count + 1
                    active.append(((0..<w).map { Double(q[i * w + $0]) }, s.group))
                }
                let q = combine(generalist: p, specialists: active)
                let predicted = q.indices.max { q[$0] < q[$1] } ?? 0
                let covering = specialists.filter { $0.group.contains(y) && $0.group.contains(top) }.count
                var r = byCover[covering] ?? Evaluation.Row(covering: covering, images: 0, generalistCorrect: 0, combinedCorrect: 0)
                r.images += 1
                if top == y { r.generalistCorrect += 1 }
                if predicted == y { r.combinedCorrect += 1 }
                byCover[covering] = r
                total += 1
                if top == y { gCorrect += 1 }
                if predicted == y { cCorrect += 1 }
            }
        }
        return Evaluation(
            rows: byCover.keys.sorted().compactMap { byCover[$0] }, total: total, generalistCorrect: gCorrect, combinedCorrect: cCorrect)
    }
}
