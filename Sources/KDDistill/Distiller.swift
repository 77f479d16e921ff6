import KDBundle
import KDData
import KDNN
import KDTensor

/// What makes a teacher/student pair compatible; checked before any work starts.
public enum Compatibility {
    public static func check(teachers: [(name: String, model: Model)], student: (name: String, model: Model)) throws {
        let s = student.model
        // A fresh student (`kdtool init` numbers its classes 0…N−1) takes the teacher's class names.
        if let tl = teachers.first?.model.labels?.classes, tl.count == s.classCount,
            s.labels == nil || s.labels!.classes == (0..<s.classCount).map(String.init)
        {
            s.labels = Labels(tl)
        }
        for (name, t) in teachers {
            guard Array(t.inputShape.dropFirst()) == Array(s.inputShape.dropFirst()) else {
                throw DistillError(
                    code: .incompatible,
                    "teacher \(name) takes inputs of \(Array(t.inputShape.dropFirst())) but student \(student.name) takes \(Array(s.inputShape.dropFirst()))"
                )
            }
            guard t.classCount == s.classCount else {
                throw DistillError(
                    code: .incompatible, "teacher \(name) has \(t.classCount) outputs but student \(student.name) has \(s.classCount)")
            }
            if let tl = t.labels?.classes, let sl = s.labels?.classes, tl != sl {
                let diff = zip(tl, sl).enumerated().first { $0.element.0 != $0.element.1 }
                throw DistillError(
                    code: .incompatible,
                    "teacher \(name) and student \(student.name) label their classes differently"
                        + (diff.map { " (class \($0.offset): '\($0.element.0)' vs '\($0.element.1)')" } ?? "")
                        + "; models distilled together must name the same classes in the same order (`kdtool init --labels` sets a student's)"
                )
            }
        }
    }
}

/// Teacher outputs for training batches, computed without autograd on the batch the student
/// sees (augmented or not). Without augmentation a batch's inputs depend only on the example
/// indices, so the logits are cached per example and reused every epoch.
public final class TeacherOutputs {
    let plans: [InferencePlan]
    let cache: Bool
    let classes: Int
    private var stored: [Int: [[Float]]] = [:]
    public private(set) var computed = 0
    public private(set) var reused = 0
    /// Examples whose logits came from the on-disk store.
    public private(set) var loadedFromDisk = 0
    public private(set) var savedToDisk = false
    let disk: (store: TeacherLogitStore, key: String, count: Int)?

    /// With `disk` (un-augmented data only), logits are read from the store when a matching file
    /// exists and written to it once every example of the set has been computed.
    public init(teachers: [Model], cacheAcrossEpochs: Bool, disk: (store: TeacherLogitStore, key: String, count: Int)? = nil) throws {
        plans = try teachers.map { try InferencePlan($0) }
        cache = cacheAcrossEpochs
        classes = teachers[0].classCount
        self.disk = cacheAcrossEpochs ? disk : nil
        if let d = self.disk, let all = d.store.load(key: d.key, count: d.count, teachers: plans.count, classes: classes) {
            let k = classes
            let t = plans.count
            for i in 0..<d.count { stored[i] = (0..<t).map { j in Array(all[(i * t + j) * k..<(i * t + j + 1) * k]) } }
            loadedFromDisk = d.count
            savedToDisk = true
        }
    }

    /// Data-parallel runs (un-augmented data): every example's logits before training starts. Each
    /// rank computes a contiguous shard of `transferSet` (its batches in order, unshuffled, of the
    /// set the trainer draws from), the shards are gathered onto every rank, and rank 0 writes
    /// them to the on-disk store. When rank 0 already has them from the store, it sends them.
    public func precompute(_ transferSet: BatchSource, world: World) throws {
        guard cache, world.isDistributed else { return }
        let k = classes
        let t = plans.count
        let count = transferSet.exampleCount
        func fill(_ all: [Float]) {
            for i in 0..<count { stored[i] = (0..<t).map { j in Array(all[(i * t + j) * k..<(i * t + j + 1) * k]) } }
        }
        if try world.agree(savedToDisk && stored.count == count, what: "whether the teacher logits are on disk") {
            let all = try world.broadcast(
                world.isRoot ? (0..<count).flatMap { stored[$0]!.flatMap { $0 } } : [], what: "the teacher logits")
            guard all.count == count * t * k else {
                throw DistillError("rank 0 sent \(all.count) teacher logits, \(count * t * k) expected")
            }
            fill(all)
            return
        }
        let batches = transferSet.batchesPerEpoch
        var mine: [Float] = []
        for b in (batches * world.rank / world.size)..<(batches * (world.rank + 1) / world.size) {
            let batch = transferSet.batch(epoch: 0, index: b)
            let out = try plans.map { try $0.run(batch.inputs) }
            for row in batch.indices.indices { for z in out { mine += UnsafeBufferPointer(start: z.pointer + row * k, count: k) } }
            computed += batch.indices.count
        }
        let bytes = mine.withUnsafeBytes { Array($0) }
        let parts = try world.allgather(bytes, what: "the teacher logits")
        var all: [Float] = []
        all.reserveCapacity(count * t * k)
        for p in parts {
            guard p.count % 4 == 0 else { throw DistillError("a rank sent a malformed teacher-logit shard") }
            all += p.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        guard all.count == count * t * k else {
            throw DistillError("the ranks' teacher-logit shards hold \(all.count / max(1, t * k)) examples, \(count) expected")
        }
        fill(all)
        if world.isRoot, let d = disk, !savedToDisk { savedToDisk = d.store.save(key: d.key, logits: all) }
    }

    /// Logits of every teacher for `batch`.
    public func logits(_ batch: Batch) throws -> [Tensor] {
        let k = classes
        if cache, batch.indices.allSatisfy({ stored[$0] != nil }) {
            reused += batch.indices.count
            return (0..<plans.count).map { t in
                Tensor(shape: [batch.indices.count, k], values: batch.indices.flatMap { stored[$0]![t] })
            }
        }
        let out = try plans.map { try $0.run(batch.inputs) }
        computed += batch.indices.count
        if cache {
            for (row, i) in batch.indices.enumerated() {
                stored[i] = out.map { Array(UnsafeBufferPointer(start: $0.pointer + row * k, count: k)) }
            }
            if let d = disk, !savedToDisk, stored.count == d.count, (0..<d.count).allSatisfy({ stored[$0] != nil }) {
                savedToDisk = d.store.save(key: d.key, logits: (0..<d.count).flatMap { stored[$0]!.flatMap { $0 } })
            }
        }
        return out
    }
}

/// Hinton knowledge distillation of one student from one or more teachers.
public struct KDConfig: Sendable {
    public var temperature: Float = 4
    public var alpha: Float = 0.9
    public var useLabels = true
    public init() {}

    public var hyperparameters: [String: Value] {
        ["temperature": .float(decimal(temperature)), "alpha": .float(decimal(useLabels ? alpha : 1)), "labels": .bool(useLabels)]
    }
}

extension Trainer {
    /// The training set in order, un-augmented and unsharded (for `TeacherOutputs.precompute`).
    public var transferSet: BatchSource? {
        (train as? Batcher).map { Batcher($0.dataset, batchSize: 256, shuffle: false, normalization: $0.normalization, seed: 0) }
    }

    /// Makes this trainer minimise the KD loss against `teachers`.
    public func distill(from teachers: TeacherOutputs, _ kd: KDConfig) {
        stage = "kd"
        objective = { batch, f in
            let z = try teachers.logits(batch)
            let targets = HintonLoss.softTargets(z, temperature: kd.temperature)
            let parts = HintonLoss.evaluate(
                student: f.tape.value(f.output), teacher: targets, labels: kd.useLabels ? batch.labels : nil, temperature: kd.temperature,
                alpha: kd.alpha)
            return (parts.total, [(f.output, parts.gradient)])
        }
    }
}
