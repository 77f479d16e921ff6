import Dispatch
import KDBundle
import KDIO
import KDTensor
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Data-parallel training on a `World`: what every rank does around a step so that all ranks
/// hold the same weights after it, bit for bit.
///
/// Each rank computes the gradient of its share of the global batch (a mean over its n_r
/// examples), scales it by n_r / n, and the ranks sum the scaled gradients with the
/// deterministic ring allreduce: the mean over the whole global batch, as one process would
/// compute it up to rounding. A step's per-rank scalars (loss sum, correct count, a stop request)
/// ride in the same buffer. Batch-norm statistics are per rank in the forward pass (as PyTorch's
/// DistributedDataParallel does by default, unless `--sync-batchnorm`); the running averages
/// are rank 0's, sent to every rank after each step (DDP's `broadcast_buffers`).
public struct DataParallel {
    public let world: World

    public init(world: World) { self.world = world }

    /// What one step's reduction gives back.
    public struct Reduced {
        public var gradients: [String: Tensor]
        /// Summed over ranks: loss × examples, correct predictions, stop requests.
        public var lossSum: Double
        public var correct: Int
        public var stopRequested: Bool
    }

    /// The factor a rank's gradient seeds take (its loss is a mean over its `share` of the `total`
    /// examples): the summed gradients are then those of the mean over the global batch — and
    /// synchronized batch norm, which sums gradient terms inside the backward pass, sees them
    /// already weighted.
    public static func weight(share: Int, of total: Int) -> Float { Float(share) / Float(max(total, 1)) }

    /// Sums the ranks' gradients (each already weighted by `weight(share:of:)`) and the step's
    /// scalars. `names` fixes the order; a gradient missing on every rank stays missing (a
    /// parameter no loss reached is not decayed, as in a run of one process).
    public func reduce(
        gradients: [String: Tensor], names: [String], shapes: [String: [Int]], lossSum: Double, correct: Int, stop: Bool,
        what: String = "the step's gradients"
    ) throws -> Reduced {
        var offsets: [Int] = []
        var count = 0
        for name in names {
            offsets.append(count)
            count += (shapes[name] ?? []).reduce(1, *)
        }
        let tail = count + names.count
        var flat = [Float](repeating: 0, count: tail + 3)
        for (k, name) in names.enumerated() {
            guard let g = gradients[name] else { continue }
            let o = offsets[k]
            for i in 0..<g.count { flat[o + i] = g[i] }
            flat[count + k] = 1
        }
        // Scalars as floats: counts per step stay far below 2^24.
        flat[tail] = Float(lossSum)
        flat[tail + 1] = Float(correct)
        flat[tail + 2] = stop ? 1 : 0
        try world.allreduceSum(&flat, what: what)
        var out: [String: Tensor] = [:]
        for (k, name) in names.enumerated() where flat[count + k] > 0 {
            let shape = shapes[name] ?? []
            let o = offsets[k]
            out[name] = Tensor(shape: shape, values: Array(flat[o..<(o + shape.reduce(1, *))]))
        }
        return Reduced(gradients: out, lossSum: Double(flat[tail]), correct: Int(flat[tail + 1]), stopRequested: flat[tail + 2] > 0)
    }

    /// Rank 0's values of `names` (parameters and buffers) on every rank, in place.
    public func broadcast(_ model: Model, names: [String], what: String) throws {
        guard world.isDistributed else { return }
        let tensors = names.compactMap { model.parameters[$0] ?? model.buffers[$0] }
        let total = tensors.reduce(0) { $0 + $1.count }
        var flat = [Float](repeating: 0, count: total)
        if world.isRoot {
            var at = 0
            for t in tensors {
                for i in 0..<t.count { flat[at + i] = t[i] }
                at += t.count
            }
        }
        try flat.withUnsafeMutableBytes { try world.broadcast($0, what: what) }
        if !world.isRoot {
            var at = 0
            for t in tensors {
                let p = t.pointer
                for i in 0..<t.count { p[i] = flat[at + i] }
                at += t.count
            }
        }
    }

    /// Every weight and buffer of rank 0 on every rank.
    public func synchronize(_ model: Model) throws { try broadcast(model, names: model.tensorNames, what: "rank 0's weights") }

    /// The checkpoint to resume from, as rank 0 sees it, on every rank (nil: none): only rank 0
    /// reads the file, so the ranks need no shared file system to resume.
    public func checkpoint(at path: String) throws -> ModelBundle? {
        var bytes: [UInt8] = []
        if world.isRoot, access(path, F_OK) == 0 { bytes = try SafeFile.readAll(path, limit: 1 << 36) }
        bytes = try world.broadcast(bytes, what: "the checkpoint")
        return bytes.isEmpty ? nil : try ModelBundle(bytes: bytes, name: path)
    }
}

extension Evaluation {
    /// The sum of every rank's evaluation (each of a different share of the data), on every rank.
    public func merged(over world: World) throws -> Evaluation {
        guard world.isDistributed else { return self }
        var flat: [Double] = [Double(count), Double(correct), lossSum] + confusion.flatMap { $0.map(Double.init) }
        try world.allreduceSum(&flat, what: "the evaluation")
        var e = self
        e.count = Int(flat[0])
        e.correct = Int(flat[1])
        e.lossSum = flat[2]
        let k = confusion.count
        for i in 0..<k { for j in 0..<k { e.confusion[i][j] = Int(flat[3 + i * k + j]) } }
        return e
    }
}

extension Model {
    /// Evaluates on `source` with the batches split round-robin across the ranks of `world`; every
    /// rank gets the whole evaluation.
    public func evaluate(_ source: BatchSource, world: World, fused: Bool = false) throws -> Evaluation {
        guard world.isDistributed else { return try evaluate(source, fused: fused) }
        var e = Evaluation(classes: classCount)
        let plan = fused ? try InferencePlan(self) : nil
        var b = world.rank
        while b < source.batchesPerEpoch {
            let batch = source.batch(epoch: 0, index: b)
            e.add(logits: try plan?.run(batch.inputs) ?? predict(batch.inputs), labels: batch.labels)
            b += world.size
        }
        return try e.merged(over: world)
    }
}

/// The gradient sum overlapped with the backward pass: parameters are grouped into buckets of
/// about `bucketBytes` in the order backward completes them (the reverse of the graph's order); a
/// bucket goes to a communication thread as soon as its last gradient is final, and the
/// allreduce runs there while backward computes the layers before it (PyTorch DDP's gradient
/// buckets). Buckets are summed strictly in their index order on every rank, so the collectives
/// match up; the result per element depends only on N and the bucket plan, hence the same digest
/// on every rerun.
public final class GradientBuckets: @unchecked Sendable {
    public let world: World
    /// Bucket of each parameter, its offset there and its presence flag's index (after the values).
    let place: [String: (bucket: Int, offset: Int, count: Int, slot: Int)]
    let shapes: [String: [Int]]
    /// Per bucket: its parameters, and the number of values (its buffer holds the values, then one
    /// presence flag per parameter).
    let members: [[String]]
    let totals: [Int]
    final class Buffer: @unchecked Sendable {
        var values: [Float]
        init(count: Int) { values = [Float](repeating: 0, count: count) }
    }
    var buffers: [Buffer] = []
    var missing: [Int] = []
    var launched = 0
    let queue = DispatchQueue(label: "kdtool.gradient-sum")
    let group = DispatchGroup()
    let failure = Mutex<Error?>(nil)
    public private(set) var bucketCount: Int
    /// Seconds the training thread waited for buckets still being summed after backward ended
    /// (the communication backward did not hide).
    public var waitSeconds = 0.0

    /// `names` in forward order (`Model.trainableNames`).
    public init(world: World, names: [String], shapes: [String: [Int]], bucketBytes: Int) {
        self.world = world
        var place: [String: (Int, Int, Int, Int)] = [:]
        var members: [[String]] = [[]]
        var size = 0
        for name in names.reversed() {
            let n = (shapes[name] ?? []).reduce(1, *)
            if size > 0 && (size + n) * 4 > bucketBytes {
                members.append([])
                size = 0
            }
            place[name] = (members.count - 1, size, n, members[members.count - 1].count)
            members[members.count - 1].append(name)
            size += n
        }
        self.place = place
        self.shapes = shapes
        self.members = members
        totals = members.map { $0.reduce(0) { $0 + (place[$1]?.2 ?? 0) } }
        bucketCount = members.count
    }

    /// A new step: every bucket empty, none launched.
    public func begin() {
        buffers = members.indices.map { Buffer(count: totals[$0] + members[$0].count) }
        missing = members.map(\.count)
        launched = 0
    }

    /// `name`'s gradient is final (already weighted by the rank's share); nil: it got none.
    public func ready(_ name: String, _ g: Tensor?) {
        guard let p = place[name] else { return }
        let buffer = buffers[p.bucket]
        if let g {
            let src = g.pointer
            buffer.values.withUnsafeMutableBufferPointer { dst in
                for i in 0..<min(g.count, p.count) { dst[p.offset + i] = src[i] }
            }
            buffer.values[totals[p.bucket] + p.slot] = 1
        }
        missing[p.bucket] -= 1
        while launched < members.count && missing[launched] == 0 { launch(launched) }
    }

    func launch(_ b: Int) {
        launched = b + 1
        let buffer = buffers[b]
        let world = self.world
        group.enter()
        queue.async { [self] in
            defer { group.leave() }
            if failure.withLock({ $0 != nil }) { return }
            do { try world.allreduceSum(&buffer.values, what: "gradient bucket \(b + 1)") } catch {
                failure.withLock { $0 = error }
            }
        }
    }

    /// Launches what is left (buckets of parameters that got no gradient here, in order), sums the
    /// step's scalars, and waits: the gradients summed over every rank, and the scalars.
    public func finish(lossSum: Double, correct: Int, stop: Bool) throws -> DataParallel.Reduced {
        while launched < members.count { launch(launched) }
        let t0 = monotonicSeconds()
        group.wait()
        waitSeconds += monotonicSeconds() - t0
        if let e = failure.withLock({ $0 }) { throw e }
        var tail: [Float] = [Float(lossSum), Float(correct), stop ? 1 : 0]
        try world.allreduceSum(&tail, what: "the step's loss and counts")
        var out: [String: Tensor] = [:]
        for (b, names) in members.enumerated() {
            let values = buffers[b].values
            for (k, name) in names.enumerated() where values[totals[b] + k] > 0 {
                let p = place[name]!
                out[name] = Tensor(shape: shapes[name] ?? [p.count], values: Array(values[p.offset..<(p.offset + p.count)]))
            }
        }
        return DataParallel.Reduced(gradients: out, lossSum: Double(tail[0]), correct: Int(tail[1]), stopRequested: tail[2] > 0)
    }
}
