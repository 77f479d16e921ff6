import KDBundle
import KDData
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Deep Mutual Learning (METHODS.md §4): K ≥ 2 peers train together from scratch, no teacher.
/// Peer k minimises L_k = CE(y, p_k) + 1/(K−1) Σ_{l≠k} KL(p_l ‖ p_k) with the other peers'
/// distributions p_l held fixed; with `ensemble` (DML_e) the target is instead the mean of the
/// other peers' distributions, L_k = CE(y, p_k) + KL(mean_{l≠k} p_l ‖ p_k).
public enum DMLLoss {
    /// Loss and dL/dz_k for peer k's logits against the others' probabilities (each [N, K]).
    public static func evaluate(logits z: Tensor, labels: [Int], others: [Tensor], ensemble: Bool) -> (loss: Float, gradient: Tensor) {
        let (ce, grad) = Softmax.crossEntropy(logits: z, labels: labels)
        let targets: [Tensor]
        if ensemble {
            let mean = Tensor(zeros: z.shape)
            for p in others { for i in 0..<mean.count { mean[i] += p[i] / Float(others.count) } }
            targets = [mean]
        } else {
            targets = others
        }
        let weight = 1 / Float(targets.count)
        var total = ce
        let n = Float(z.shape[0])
        for p in targets {
            let (soft, g) = Softmax.softCrossEntropy(logits: z, targets: p, temperature: 1)
            var entropy: Double = 0
            for i in 0..<p.count where p[i] > 0 { entropy -= Double(p[i]) * Double(logf(p[i])) }
            total += weight * (soft - Float(entropy) / n)
            for i in 0..<grad.count { grad[i] += weight * g[i] }
        }
        return (total, grad)
    }
}

public struct DMLConfig: Sendable {
    /// Update every peer from one forward pass instead of in turn.
    public var simultaneous = false
    /// DML_e: the mean of the other peers as a single target.
    public var ensemble = false
    public init() {}

    public var hyperparameters: [String: Value] { ["simultaneous": .bool(simultaneous), "ensemble": .bool(ensemble)] }
}

/// Trains the peers in lockstep on the same batches. In turn (the paper's algorithm): peer k's
/// step uses the other peers' predictions recomputed after the peers before it were updated.
/// Every peer has its own optimizer and checkpoint; a resumed run continues all of them.
public final class MutualTrainer {
    public let peers: [Model]
    public let config: TrainConfig
    public let dml: DMLConfig
    public let train: BatchSource
    public let eval: BatchSource?
    public let checkpointPaths: [String]?
    public var onEpoch: ((Int, [EpochMetrics]) -> Void)?
    public var onProgress: ((Int, Int, Int) -> Void)?
    public var shouldStop: () -> Bool = { false }
    public private(set) var history: [[EpochMetrics]]
    var optimizers: [Optimizer]
    /// The ranks of a data-parallel run: each peer's step sums its gradients over them (as
    /// `Trainer` does); rank 0 alone writes the checkpoints.
    public var world: World = Cluster.world
    /// A stop was requested on some rank during the last step.
    var stopAfterStep = false

    public init(
        peers: [Model], config: TrainConfig, dml: DMLConfig, train: BatchSource, eval: BatchSource?, checkpointPaths: [String]?
    ) {
        self.peers = peers
        self.config = config
        self.dml = dml
        self.train = train
        self.eval = eval
        self.checkpointPaths = checkpointPaths
        self.history = Array(repeating: [], count: peers.count)
        self.optimizers = peers.map { _ in
            var o = Optimizer(config.optimizer)
            o.momentum = config.momentum
            o.nesterov = config.nesterov
            o.weightDecay = config.weightDecay
            return o
        }
    }

    /// Probabilities of `peer` on `x` in training mode without gradients; its batch-norm running
    /// statistics are left as they were (only a peer's own step updates them).
    func detachedProbabilities(_ peer: Model, _ x: Tensor, rng: inout RandomSource) throws -> Tensor {
        let saved = peer.buffers.mapValues { $0.copy() }
        defer { for (k, v) in saved { peer.buffers[k]!.pointer.update(from: v.pointer, count: v.count) } }
        let tape = Tape(recording: false)
        return Softmax.forward(tape.value(try peer.forward(x, training: true, tape: tape, rng: &rng, fusing: []).output))
    }

    /// Peer k's step; returns its loss (a mean over the global batch) and correct predictions.
    func update(_ k: Int, _ batch: Batch, others: [Tensor], lr: Float, rng: inout RandomSource) throws -> (Float, Int) {
        let peer = peers[k]
        var grads: [String: Tensor] = [:]
        var loss: Float = 0
        var correct = 0
        if !batch.labels.isEmpty {
            let tape = Tape()
            tape.batchNormSync = config.syncBatchNorm && world.isDistributed ? world : nil
            let f = try peer.forward(batch.inputs, training: true, tape: tape, rng: &rng, fusing: [])
            var grad: Tensor
            (loss, grad) = DMLLoss.evaluate(logits: tape.value(f.output), labels: batch.labels, others: others, ensemble: dml.ensemble)
            guard loss.isFinite || world.isDistributed else {
                throw NNError("peer \(k + 1)'s loss became \(loss); try a lower --lr", code: .diverged)
            }
            if world.isDistributed { grad = grad.scaled(by: DataParallel.weight(share: batch.labels.count, of: batch.globalCount)) }
            try tape.backward([(f.output, grad)])
            for name in peer.trainableNames { if let v = f.parameter(name), let g = tape.grad(v) { grads[name] = g } }
            let z = tape.value(f.output)
            let kk = z.count / max(1, batch.labels.count)
            for (i, y) in batch.labels.enumerated() {
                var best = 0
                for j in 1..<kk where z[i * kk + j] > z[i * kk + best] { best = j }
                if best == y { correct += 1 }
            }
        }
        if world.isDistributed {
            let parallel = DataParallel(world: world)
            let r = try parallel.reduce(
                gradients: grads, names: peer.trainableNames, shapes: peer.parameters.mapValues(\.shape),
                lossSum: Double(loss) * Double(batch.labels.count), correct: correct, stop: shouldStop(), what: "peer \(k + 1)'s gradients")
            grads = r.gradients
            loss = Float(r.lossSum / Double(max(batch.globalCount, 1)))
            correct = r.correct
            if r.stopRequested { stopAfterStep = true }
            guard loss.isFinite else { throw NNError("peer \(k + 1)'s loss became \(loss); try a lower --lr", code: .diverged) }
        }
        optimizers[k].step(parameters: peer.parameters, gradients: grads, lr: lr)
        try DataParallel(world: world).broadcast(
            peer, names: peer.tensorNames.filter { peer.buffers[$0] != nil }, what: "rank 0's batch-norm statistics")
        return (loss, correct)
    }

    /// Returns the step training (re)started at.
    @discardableResult
    public func run(resume: Bool = false) throws -> Int {
        Parallel.configure(threads: config.threads)
        let perEpoch = train.batchesPerEpoch
        let schedule = Schedule(
            kind: config.schedule, baseLR: config.lr, totalSteps: perEpoch * config.epochs, warmupSteps: config.warmupSteps)
        var step = 0
        if world.isDistributed {
            // Rank 0 reads the checkpoints and sends them; then its weights, so every rank starts equal.
            let parallel = DataParallel(world: world)
            if resume, let paths = checkpointPaths {
                let present = try world.agree(world.isRoot && paths.allSatisfy({ access($0, F_OK) == 0 }), what: "the checkpoints")
                if present {
                    let steps = try peers.indices.map { k -> Int in
                        guard let b = try parallel.checkpoint(at: paths[k]) else { throw DistillError("\(paths[k]) vanished") }
                        return try Checkpoint.restore(model: peers[k], optimizer: &optimizers[k], config: config, stage: "dml", from: b)
                    }
                    guard Set(steps).count == 1 else { throw DistillError("the peers' checkpoints are from different steps: \(steps)") }
                    step = steps[0]
                }
            }
            for peer in peers { try parallel.synchronize(peer) }
        } else if resume, let paths = checkpointPaths, paths.allSatisfy({ access($0, F_OK) == 0 }) {
            let steps = try peers.indices.map {
                try Checkpoint.restore(model: peers[$0], optimizer: &optimizers[$0], config: config, stage: "dml", from: paths[$0])
            }
            guard Set(steps).count == 1 else { throw DistillError("the peers' checkpoints are from different steps: \(steps)") }
            step = steps[0]
        }
        let start = step
        var epoch = step / perEpoch
        while epoch < config.epochs {
            let began = now()
            var lossSums = [Double](repeating: 0, count: peers.count)
            var correct = [Int](repeating: 0, count: peers.count)
            var seen = 0
            for batch in train.prefetching(epoch: epoch, from: step - epoch * perEpoch) {
                let index = step - epoch * perEpoch
                let lr = schedule.lr(at: step)
                var rng =
                    world.rank == 0
                    ? RandomSource(seed: config.seed, stream: 0xd41, UInt64(epoch), UInt64(index))
                    : RandomSource(seed: config.seed, stream: 0xd41, UInt64(epoch), UInt64(index), UInt64(world.rank))
                var fixed: [Tensor]?
                if dml.simultaneous && !batch.labels.isEmpty {
                    fixed = try peers.map { try detachedProbabilities($0, batch.inputs, rng: &rng) }
                }
                for k in peers.indices {
                    let others = try peers.indices.filter { $0 != k && !batch.labels.isEmpty }.map { l in
                        try fixed?[l] ?? detachedProbabilities(peers[l], batch.inputs, rng: &rng)
                    }
                    let (loss, c) = try update(k, batch, others: others, lr: lr, rng: &rng)
                    lossSums[k] += Double(loss) * Double(batch.globalCount)
                    correct[k] += c
                }
                seen += batch.globalCount
                step += 1
                onProgress?(epoch + 1, index + 1, perEpoch)
                if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 && index + 1 < perEpoch { try checkpoint(step) }
                if world.isDistributed ? stopAfterStep : shouldStop() {
                    try checkpoint(step)
                    throw Trainer.Interrupted(checkpoint: checkpointPaths?.first)
                }
            }
            let seconds = now() - began
            var metrics: [EpochMetrics] = []
            for k in peers.indices {
                var m = EpochMetrics(
                    epoch: epoch + 1, step: step, stage: "dml-peer\(k + 1)", trainLoss: lossSums[k] / Double(max(seen, 1)),
                    trainAccuracy: Double(correct[k]) / Double(max(seen, 1)), seconds: seconds,
                    imagesPerSecond: Double(seen) / max(seconds, 1e-9))
                if let eval {
                    let e = try peers[k].evaluate(eval, world: world)
                    m.evalAccuracy = e.accuracy
                    m.evalLoss = e.loss
                }
                history[k].append(m)
                metrics.append(m)
            }
            onEpoch?(epoch + 1, metrics)
            epoch += 1
            if epoch < config.epochs { try checkpoint(step) }
        }
        if world.isRoot, let paths = checkpointPaths { for p in paths { unlink(p) } }
        return start
    }

    func checkpoint(_ step: Int) throws {
        guard world.isRoot, let paths = checkpointPaths else { return }
        for k in peers.indices {
            try Checkpoint.write(model: peers[k], optimizer: optimizers[k], config: config, stage: "dml", step: step, to: paths[k])
        }
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// One Deep Mutual Learning run, everything but its command line: the data checked against the
/// first peer, the batches, the peers trained together with their checkpoints, and each peer's
/// metrics. `kdtool distill --method dml` builds one, then writes the peers and their provenance.
public struct MutualLearningJob {
    public var peers: [Model]
    public var train: Dataset
    public var eval: Dataset?
    public var config: TrainConfig
    public var dml: DMLConfig
    public var augmentation: Augmentation = .none
    public var normalization: Normalization
    /// One checkpoint per peer (nil: none).
    public var checkpointPaths: [String]?
    public var shouldStop: () -> Bool = { false }
    public var onProgress: ((Int, Int, Int) -> Void)?
    public var onEpoch: ((Int, [EpochMetrics]) -> Void)?

    public init(peers: [Model], train: Dataset, config: TrainConfig, dml: DMLConfig, normalization: Normalization) {
        self.peers = peers
        self.train = train
        self.config = config
        self.dml = dml
        self.normalization = normalization
    }

    public struct Result {
        /// Per peer, per epoch.
        public var history: [[EpochMetrics]]
        public var resumedAt: Int
        public var seconds: Double
        /// Per peer: seconds, train accuracy and (with eval data) eval accuracy of the last epoch.
        public var metrics: [[String: Value]]
    }

    public func run(resume: Bool) throws -> Result {
        guard let first = peers.first else { throw DistillError("deep mutual learning needs at least one peer") }
        try TrainingJob.checkFits(first, train)
        let batches = Batcher(
            train, batchSize: config.batchSize, shuffle: true, augmentation: augmentation, normalization: normalization, seed: config.seed)
        batches.shard = (Cluster.world.rank, Cluster.world.size)
        let evalBatches = eval.map { Batcher($0, batchSize: 256, shuffle: false, normalization: normalization, seed: 0) }
        let trainer = MutualTrainer(
            peers: peers, config: config, dml: dml, train: batches, eval: evalBatches, checkpointPaths: checkpointPaths)
        trainer.shouldStop = shouldStop
        trainer.onProgress = onProgress
        trainer.onEpoch = onEpoch
        let started = TrainingJob.now()
        let resumedAt = try trainer.run(resume: resume)
        let seconds = TrainingJob.now() - started
        let metrics = trainer.history.map { h -> [String: Value] in
            var m: [String: Value] = ["seconds": .float(seconds)]
            if let last = h.last {
                m["train_accuracy"] = .float(last.trainAccuracy)
                if let a = last.evalAccuracy { m["eval_accuracy"] = .float(a) }
            }
            return m
        }
        return Result(history: trainer.history, resumedAt: resumedAt, seconds: seconds, metrics: metrics)
    }
}

/// The protocol of the two-stage methods (FitNets, FSP): stage 1 trains the student towards the
/// teacher's intermediate representation and leaves its bundle as a restart point; stage 2 trains
/// from it into the final output; the stage-1 bundle is removed once stage 2 has written its
/// result. A resumed run that finds the stage-1 bundle goes straight to stage 2.
public enum TwoStageSchedule {
    /// Runs the schedule; `stage1` trains and writes `stage1Output`, `load` reads it back for a
    /// resume, `between` adapts the model (e.g. drops the regressor), `stage2` trains into the output.
    /// With `stage1Epochs` 0 there is no stage 1 (the stage-2 loss alone, for an equal-budget
    /// baseline); `keepStage1` leaves the stage-1 bundle in place for inspection. Returns whether
    /// stage 1 was skipped because it was already done.
    @discardableResult
    public static func run(
        student: Model, stage1Output: String, resume: Bool, stage1Epochs: Int = 1, keepStage1: Bool = false,
        load: (String) throws -> Model, stage1: (Model) throws -> Void, between: (Model) -> Void, stage2: (Model) throws -> Void
    ) throws -> Bool {
        var model = student
        // In a data-parallel run rank 0 decides; a rank that cannot see the file keeps the student
        // as it is, and stage 2 starts from rank 0's weights on every rank anyway.
        let world = Cluster.world
        let skipped = try world.agree(resume && access(stage1Output, F_OK) == 0, what: "whether stage 1 is done")
        if skipped {
            if world.isRoot || access(stage1Output, F_OK) == 0 { model = try load(stage1Output) }
        } else if stage1Epochs > 0 {
            try stage1(model)
        }
        between(model)
        try stage2(model)
        if !keepStage1 && world.isRoot { unlink(stage1Output) }
        return skipped
    }
}
