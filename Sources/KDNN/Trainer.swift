import KDBundle
import KDIO
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Everything that determines a training run.
public struct TrainConfig: Sendable {
    public var epochs = 10
    public var batchSize = 128
    public var lr: Float = 0.05
    public var optimizer = Optimizer.Kind.sgd
    public var momentum: Float = 0.9
    public var nesterov = false
    public var weightDecay: Float = 5e-4
    public var schedule = Schedule.Kind.cosine
    public var warmupSteps = 0
    public var stepEvery = 0
    public var seed: UInt64 = 0
    public var threads = 2
    /// Data-parallel runs: batch-norm statistics over the whole global batch (`--sync-batchnorm`)
    /// rather than each rank's share (the default, as in PyTorch's DistributedDataParallel).
    public var syncBatchNorm = false
    /// Data-parallel runs: gradients are summed in buckets of about this many bytes while backward
    /// runs (0: one sum after backward; nil: buckets of 256 KiB when the ranks span several
    /// machines, one sum when they share one — there the ring's copies are work for the same cores
    /// that compute, and overlap measured slower). Synchronized batch norm sums inside backward
    /// itself, so it always uses the single sum.
    public var gradientBucketBytes: Int? = nil

    /// The bucket size a run on `world` uses (0: one sum after backward).
    public func bucketBytes(on world: World) -> Int {
        if let b = gradientBucketBytes { return b }
        return world.transport?.allOnOneNode == true ? 0 : 256 << 10
    }
    /// Write a checkpoint every this many steps (0: only at the end of each epoch).
    public var checkpointEvery = 0
    /// Debugging (the hidden `--debug-stop-at-checkpoint N`): after writing its N-th checkpoint the
    /// process stops itself (SIGSTOP), so a test can kill it at a known checkpoint boundary (every
    /// rank of a data-parallel run stops there). It changes no result and is not part of the
    /// fingerprint.
    public var stopAtCheckpoint = 0
    /// Early stopping: end training when the validation accuracy has not improved for this many
    /// epochs (0: never). Needs a validation set and `bestPath`; the best weights are kept.
    public var patience = 0
    /// Also log the loss of the first this many steps of the run (each stage of a two-stage
    /// method is its own run) to the trainer's `stepLogPath`; 0: none. Not part of the fingerprint.
    public var logSteps = 0
    /// Method settings (temperature, teachers' digests, …) that a resumed run must share.
    public var methodSettings: [String: Value] = [:]

    public init() {}

    public var hyperparameters: [String: Value] {
        var hp: [String: Value] = [
            "epochs": .uint(UInt64(epochs)), "batch": .uint(UInt64(batchSize)), "lr": .float(decimal(lr)),
            "optimizer": .string(optimizer.rawValue), "momentum": .float(decimal(momentum)), "nesterov": .bool(nesterov),
            "weight_decay": .float(decimal(weightDecay)), "schedule": .string(schedule.rawValue),
            "warmup_steps": .uint(UInt64(warmupSteps)), "step_every": .uint(UInt64(stepEvery)), "threads": .uint(UInt64(threads)),
        ]
        if patience > 0 { hp["patience"] = .uint(UInt64(patience)) }
        if syncBatchNorm { hp["sync_batchnorm"] = .bool(true) }
        return hp
    }

    /// Identifies the run for resuming: a checkpoint from other settings is refused. The thread
    /// count is not part of it, nor is the rank count of a data-parallel run: a run may resume with
    /// other resources (it then continues correctly, though not to the last bit of the run it
    /// replaces, since the summation order follows the partition).
    public var fingerprint: String {
        var hp = hyperparameters
        hp["threads"] = nil
        return Value.map(hp.merging(["seed": .uint(seed), "method": .map(methodSettings)]) { a, _ in a }).encoded()
            .withUnsafeBytes { SHA256.hex($0) }
    }
}

/// A Float as the Double of its shortest decimal form (0.05, not 0.05000000074505806), for provenance.
public func decimal(_ x: Float) -> Double { Double("\(x)") ?? Double(x) }

/// Progress of a run, reported after every step.
public struct TrainProgress: Sendable {
    public var epoch: Int
    public var epochs: Int
    public var batch: Int
    public var batches: Int
    public var step: Int
    public var loss: Double
    public var accuracy: Double
    public var imagesPerSecond: Double
    public var lr: Float
}

/// One line of the metrics log (JSON lines next to the output).
public struct EpochMetrics: Sendable {
    public var epoch: Int
    public var step: Int
    public var stage: String
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var evalLoss: Double?
    public var evalAccuracy: Double?
    public var seconds: Double
    public var imagesPerSecond: Double
    public var extra: [String: Double] = [:]

    public init(
        epoch: Int, step: Int, stage: String, trainLoss: Double, trainAccuracy: Double, evalLoss: Double? = nil,
        evalAccuracy: Double? = nil,
        seconds: Double, imagesPerSecond: Double
    ) {
        self.epoch = epoch
        self.step = step
        self.stage = stage
        self.trainLoss = trainLoss
        self.trainAccuracy = trainAccuracy
        self.evalLoss = evalLoss
        self.evalAccuracy = evalAccuracy
        self.seconds = seconds
        self.imagesPerSecond = imagesPerSecond
    }

    public var json: String {
        var parts = [
            "\"epoch\":\(epoch)", "\"step\":\(step)", "\"stage\":\"\(stage)\"", "\"train_loss\":\(trainLoss)",
            "\"train_accuracy\":\(trainAccuracy)", "\"seconds\":\(seconds)", "\"images_per_second\":\(imagesPerSecond)",
        ]
        if let evalLoss { parts.append("\"eval_loss\":\(evalLoss)") }
        if let evalAccuracy { parts.append("\"eval_accuracy\":\(evalAccuracy)") }
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { parts.append("\"\(k)\":\(v)") }
        return "{" + parts.joined(separator: ",") + "}"
    }
}

/// The loss of one batch: its value and the gradient seeds (dL/dv) to back-propagate.
public typealias Objective = (_ batch: Batch, _ forward: Model.Forward) throws -> (loss: Float, seeds: [(Var, Tensor)])

/// Mean softmax cross-entropy against the batch labels.
public func crossEntropyObjective(_ batch: Batch, _ f: Model.Forward) throws -> (loss: Float, seeds: [(Var, Tensor)]) {
    let (loss, grad) = Softmax.crossEntropy(logits: f.tape.value(f.output), labels: batch.labels)
    return (loss, [(f.output, grad)])
}

/// Mini-batch training with checkpoints. A run killed at any point and restarted with `resume`
/// continues from its last checkpoint and ends with the same weights as an uninterrupted run.
public final class Trainer {
    public let model: Model
    public let config: TrainConfig
    public let train: BatchSource
    public let eval: BatchSource?
    /// Where checkpoints go (nil: none).
    public let checkpointPath: String?
    public let metricsPath: String?
    /// Where `TrainConfig.logSteps` writes its per-step JSON lines.
    public var stepLogPath: String?
    public var stage = "train"
    /// Checkpoints this trainer has written (for `TrainConfig.stopAtCheckpoint`).
    var checkpointsWritten = 0
    /// The epoch after which early stopping ended the run (nil: it ran every epoch).
    public private(set) var stoppedEarly: Int?
    public var objective: Objective = crossEntropyObjective
    /// The tensors the objective reads besides the output (a batch norm or addition and its ReLU
    /// run fused where the tensor between them is not one of these).
    public var objectiveReads: Set<String> = []
    public var onProgress: ((TrainProgress) -> Void)?
    public var onEpoch: ((EpochMetrics) -> Void)?
    /// Model selection: evaluated after every epoch; with `bestPath`, the weights of the epoch with
    /// the highest validation accuracy are kept there (a bundle, so a resumed run still knows them)
    /// and restored at the end.
    public var validation: BatchSource?
    public var bestPath: String?
    public private(set) var bestEpoch: Int?
    public private(set) var bestValidationAccuracy: Double?
    /// Checked between steps; when it returns true a checkpoint is written and `run` throws `Interrupted`.
    public var shouldStop: () -> Bool = { false }
    public private(set) var optimizer: Optimizer
    /// The step being taken (0-based), for objectives whose weights follow a schedule.
    public private(set) var currentStep = 0
    /// Steps in the whole run.
    public var totalSteps: Int { train.batchesPerEpoch * config.epochs }
    public private(set) var history: [EpochMetrics] = []
    /// The ranks this run is spread over (data-parallel under `mpirun`); `Cluster.world` by default.
    /// Rank 0 alone writes checkpoints, metrics and the best weights.
    public var world: World = Cluster.world

    public struct Interrupted: Error, CustomStringConvertible {
        public let checkpoint: String?
        public init(checkpoint: String?) { self.checkpoint = checkpoint }
        public var description: String { "interrupted; checkpoint written to \(checkpoint ?? "nowhere")" }
    }

    public init(model: Model, config: TrainConfig, train: BatchSource, eval: BatchSource?, checkpointPath: String?, metricsPath: String?) {
        self.model = model
        self.config = config
        self.train = train
        self.eval = eval
        self.checkpointPath = checkpointPath
        self.metricsPath = metricsPath
        var opt = Optimizer(config.optimizer)
        opt.momentum = config.momentum
        opt.nesterov = config.nesterov
        opt.weightDecay = config.weightDecay
        self.optimizer = opt
    }

    /// Trains from scratch, or from the checkpoint when `resume` is set and one exists.
    /// Returns the step at which training (re)started.
    @discardableResult
    public func run(resume: Bool = false) throws -> Int {
        Parallel.configure(threads: config.threads)
        let perEpoch = train.batchesPerEpoch
        let total = perEpoch * config.epochs
        var schedule = Schedule(kind: config.schedule, baseLR: config.lr, totalSteps: total, warmupSteps: config.warmupSteps)
        schedule.stepEvery = config.stepEvery
        var step = 0
        let parallel = DataParallel(world: world)
        let root = world.isRoot
        if world.isDistributed {
            // Rank 0 reads the checkpoint and sends it, then its weights: every rank starts equal.
            if resume, let path = checkpointPath, let b = try parallel.checkpoint(at: path) {
                step = try Checkpoint.restore(model: model, optimizer: &optimizer, config: config, stage: stage, from: b)
            }
            try parallel.synchronize(model)
        } else if resume, let path = checkpointPath, access(path, F_OK) == 0 {
            step = try restore(path)
        }
        let startStep = step
        if root {
            if step == 0, let bestPath { unlink(bestPath) }
            if let metricsPath { try MetricsLog.truncate(metricsPath, afterStep: step, stage: stage) }
            if config.logSteps > 0, let stepLogPath { try MetricsLog.truncate(stepLogPath, afterStep: step, stage: stage) }
        }
        let trainable = model.trainableNames
        let shapes = model.parameters.mapValues(\.shape)
        let bufferNames = model.tensorNames.filter { model.buffers[$0] != nil }
        let overlap =
            world.isDistributed && config.bucketBytes(on: world) > 0 && !config.syncBatchNorm
            && (world.transport?.allowsOtherThreads ?? false)
        let buckets =
            overlap ? GradientBuckets(world: world, names: trainable, shapes: shapes, bucketBytes: config.bucketBytes(on: world)) : nil
        var epoch = step / perEpoch
        while epoch < config.epochs {
            let firstBatch = step - epoch * perEpoch
            let started = now()
            var seen = 0
            var lossSum = 0.0
            var correct = 0
            if world.isDistributed { world.resetStatistics() }
            buckets?.waitSeconds = 0
            var computeSeconds = 0.0
            for batch in train.prefetching(epoch: epoch, from: firstBatch) {
                let index = step - epoch * perEpoch
                let lr = schedule.lr(at: step)
                // Dropout masks: each rank draws its own (rank 0's stream is a single process's).
                var rng =
                    world.rank == 0
                    ? RandomSource(seed: config.seed, stream: 0xd409, UInt64(epoch), UInt64(index))
                    : RandomSource(seed: config.seed, stream: 0xd409, UInt64(epoch), UInt64(index), UInt64(world.rank))
                currentStep = step
                let computeStart = now()
                var loss: Float = 0
                var grads: [String: Tensor] = [:]
                var batchCorrect = 0
                let n = batch.labels.count
                buckets?.begin()
                if n > 0 {
                    let tape = Tape()
                    tape.batchNormSync = config.syncBatchNorm && world.isDistributed ? world : nil
                    let f = try model.forward(batch.inputs, training: true, tape: tape, rng: &rng, fusing: objectiveReads)
                    var (l, seeds) = try objective(batch, f)
                    loss = l
                    if world.isDistributed {
                        let w = DataParallel.weight(share: n, of: batch.globalCount)
                        seeds = seeds.map { v, g in (v, g.scaled(by: w)) }
                    }
                    guard loss.isFinite || world.isDistributed else {
                        throw NNError(
                            "loss became \(loss) at epoch \(epoch + 1), step \(step + 1); try a lower --lr (now \(config.lr))",
                            code: .diverged)
                    }
                    if let buckets {
                        // Each parameter's gradient goes to its bucket as soon as it is final.
                        var watched: [Var] = []
                        var nameOf: [Int: String] = [:]
                        for name in trainable {
                            if let v = f.parameter(name) {
                                watched.append(v)
                                nameOf[v.id] = name
                            }
                        }
                        try tape.backward(seeds, watching: watched) { v in buckets.ready(nameOf[v.id]!, tape.grad(v)) }
                    } else {
                        try tape.backward(seeds)
                        for name in trainable { if let v = f.parameter(name), let g = tape.grad(v) { grads[name] = g } }
                    }
                    batchCorrect = Self.correct(tape.value(f.output), batch.labels)
                } else if config.syncBatchNorm && world.isDistributed {
                    throw NNError(
                        "batch \(index + 1) of epoch \(epoch + 1) has fewer examples than there are ranks; --sync-batchnorm needs every rank to hold at least one"
                    )
                }
                computeSeconds += now() - computeStart
                var stepLoss = Double(loss)
                var stepCount = n
                if world.isDistributed {
                    let r =
                        try buckets?.finish(lossSum: Double(loss) * Double(n), correct: batchCorrect, stop: shouldStop())
                        ?? parallel.reduce(
                            gradients: grads, names: trainable, shapes: shapes, lossSum: Double(loss) * Double(n),
                            correct: batchCorrect, stop: shouldStop())
                    grads = r.gradients
                    stepCount = batch.globalCount
                    stepLoss = r.lossSum / Double(max(stepCount, 1))
                    batchCorrect = r.correct
                    if r.stopRequested { stopAfterStep = true }
                    guard stepLoss.isFinite else {
                        throw NNError(
                            "loss became \(stepLoss) at epoch \(epoch + 1), step \(step + 1); try a lower --lr (now \(config.lr))",
                            code: .diverged)
                    }
                }
                if root, config.logSteps > 0, step < config.logSteps, let stepLogPath {
                    try MetricsLog.append(
                        stepLogPath, "{\"stage\":\"\(stage)\",\"step\":\(step + 1),\"loss\":\(Float(stepLoss)),\"lr\":\(lr)}")
                }
                Profiler.measure("optimizer step") { optimizer.step(parameters: model.parameters, gradients: grads, lr: lr) }
                // Running batch-norm averages: rank 0's everywhere.
                try parallel.broadcast(model, names: bufferNames, what: "rank 0's batch-norm statistics")
                seen += stepCount
                lossSum += stepLoss * Double(stepCount)
                correct += batchCorrect
                step += 1
                let elapsed = max(now() - started, 1e-9)
                onProgress?(
                    TrainProgress(
                        epoch: epoch + 1, epochs: config.epochs, batch: index + 1, batches: perEpoch, step: step,
                        loss: lossSum / Double(seen),
                        accuracy: Double(correct) / Double(seen), imagesPerSecond: Double(seen) / elapsed, lr: lr))
                let atEpochEnd = index + 1 == perEpoch
                if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 && !atEpochEnd { try checkpoint(step: step) }
                if world.isDistributed ? stopAfterStep : shouldStop() {
                    try checkpoint(step: step)
                    throw Interrupted(checkpoint: checkpointPath)
                }
            }
            let seconds = now() - started
            var m = EpochMetrics(
                epoch: epoch + 1, step: step, stage: stage, trainLoss: lossSum / Double(max(seen, 1)),
                trainAccuracy: Double(correct) / Double(max(seen, 1)), seconds: seconds, imagesPerSecond: Double(seen) / max(seconds, 1e-9))
            if world.isDistributed {
                // The step-time breakdown: this rank's compute and time inside collectives.
                m.extra["ranks"] = Double(world.size)
                m.extra["compute_seconds"] = computeSeconds
                m.extra["allreduce_seconds"] = world.seconds
                if let buckets {
                    m.extra["allreduce_wait_seconds"] = buckets.waitSeconds
                    m.extra["gradient_buckets"] = Double(buckets.bucketCount)
                }
                m.extra["allreduce_bytes_per_step"] = Double(world.bytesSent) / Double(max(1, step - epoch * perEpoch - firstBatch))
            }
            if let eval {
                let e = try model.evaluate(eval, world: world)
                m.evalLoss = e.loss
                m.evalAccuracy = e.accuracy
            }
            if let validation {
                let v = try model.evaluate(validation, world: world)
                m.extra["val_accuracy"] = v.accuracy
                m.extra["val_loss"] = v.loss
                if root, let bestPath, v.accuracy > (try Self.bestAccuracy(bestPath) ?? -1) {
                    var c = model.contents()
                    var meta = c.metadata?.entries ?? [:]
                    meta[Self.bestKey] = .map(["val_accuracy": .float(v.accuracy), "epoch": .uint(UInt64(epoch + 1))])
                    c.metadata = Metadata(meta)
                    try BundleWriter.write(c, to: bestPath)
                }
            }
            history.append(m)
            if root, let metricsPath { try MetricsLog.append(metricsPath, m.json) }
            onEpoch?(m)
            epoch += 1
            // Early stopping: the best epoch so far is stored with the best weights (so it survives a
            // resume); rank 0 holds them and decides for every rank.
            var stopEarly = false
            if root, config.patience > 0, let bestPath, let best = try Self.bestInfo(bestPath)?.epoch, epoch - best >= config.patience,
                epoch < config.epochs
            {
                stopEarly = true
            }
            if try world.agree(stopEarly, what: "the early-stopping decision") {
                stoppedEarly = epoch
                break
            }
            if epoch < config.epochs { try checkpoint(step: step) }
        }
        if root, let path = checkpointPath { unlink(path) }
        if root, let bestPath, access(bestPath, F_OK) == 0 {
            let b = try ModelBundle(path: bestPath)
            try model.load(from: b)
            if case .map(let info)? = try b.metadata()?.entries[Self.bestKey] {
                if case .uint(let e)? = info["epoch"] { bestEpoch = Int(clamping: e) }
                if case .float(let a)? = info["val_accuracy"] { bestValidationAccuracy = a }
            }
            unlink(bestPath)
        }
        if world.isDistributed && bestPath != nil {
            // The kept weights are rank 0's best epoch; every rank evaluates the same model.
            try parallel.synchronize(model)
            let info = try world.broadcast([Double(bestEpoch ?? 0), bestValidationAccuracy ?? -1], what: "the best epoch")
            if !root, info[0] > 0 {
                bestEpoch = Int(info[0])
                bestValidationAccuracy = info[1]
            }
        }
        return startStep
    }

    static let bestKey = "kdtool.best"

    /// Validation accuracy stored with the best weights so far, if any.
    static func bestAccuracy(_ path: String) throws -> Double? { try bestInfo(path)?.accuracy }

    /// Validation accuracy and epoch stored with the best weights so far, if any.
    static func bestInfo(_ path: String) throws -> (accuracy: Double, epoch: Int)? {
        guard access(path, F_OK) == 0 else { return nil }
        guard case .map(let info)? = try ModelBundle(path: path).metadata()?.entries[bestKey], case .float(let a)? = info["val_accuracy"],
            case .uint(let e)? = info["epoch"]
        else {
            return nil
        }
        return (a, Int(clamping: e))
    }

    static func correct(_ logits: Tensor, _ labels: [Int]) -> Int {
        let k = logits.count / max(1, labels.count)
        var c = 0
        for (i, y) in labels.enumerated() {
            var best = 0
            for j in 1..<k where logits[i * k + j] > logits[i * k + best] { best = j }
            if best == y { c += 1 }
        }
        return c
    }

    // MARK: Checkpoints

    /// A stop was requested on some rank during the last step (data-parallel runs stop together).
    var stopAfterStep = false

    func checkpoint(step: Int) throws {
        guard let path = checkpointPath else { return }
        // Rank 0 writes; every rank counts, so `stopAtCheckpoint` pauses each at the same step.
        if world.isRoot { try Checkpoint.write(model: model, optimizer: optimizer, config: config, stage: stage, step: step, to: path) }
        checkpointsWritten += 1
        if checkpointsWritten == config.stopAtCheckpoint { raise(SIGSTOP) }
    }

    func restore(_ path: String) throws -> Int {
        try Checkpoint.restore(model: model, optimizer: &optimizer, config: config, stage: stage, from: path)
    }
}

/// Checkpoint bundles: weights, buffers, optimizer state and the position in the data stream,
/// written atomically. The random state is the (seed, epoch, batch) position: every random draw
/// derives from it.
public enum Checkpoint {
    static let key = "kdtool.checkpoint"

    public static func write(model: Model, optimizer: Optimizer, config: TrainConfig, stage: String, step: Int, to path: String) throws {
        var c = model.contents(extraTensors: optimizer.checkpointTensors)
        var meta = c.metadata?.entries ?? [:]
        meta[key] = .map([
            "step": .uint(UInt64(step)), "optimizer_steps": .uint(UInt64(optimizer.steps)), "fingerprint": .string(config.fingerprint),
            "stage": .string(stage), "seed": .uint(config.seed),
            "rng": .ints(RandomSource(seed: config.seed, stream: 0xd409, UInt64(step)).stateArray.map { Int64(bitPattern: $0) }),
        ])
        c.metadata = Metadata(meta)
        c.deflate = []
        try BundleWriter.write(c, to: path)
    }

    /// Loads the checkpoint into `model` and `optimizer`; returns the step it was taken at.
    public static func restore(model: Model, optimizer: inout Optimizer, config: TrainConfig, stage: String, from path: String) throws
        -> Int
    {
        try restore(model: model, optimizer: &optimizer, config: config, stage: stage, from: try ModelBundle(path: path))
    }

    /// Loads a checkpoint already read (a data-parallel run's rank 0 sends its bytes to the others).
    public static func restore(model: Model, optimizer: inout Optimizer, config: TrainConfig, stage: String, from b: ModelBundle) throws
        -> Int
    {
        let path = b.path
        guard case .map(let info)? = try b.metadata()?.entries[key],
            case .uint(let step)? = info["step"], case .uint(let optSteps)? = info["optimizer_steps"],
            case .string(let fingerprint)? = info["fingerprint"]
        else { throw NNError("\(path) is not a kdtool checkpoint") }
        guard fingerprint == config.fingerprint else {
            throw NNError(
                "\(path) was written by a run with other settings (seed, epochs, batch, lr, …); rerun with the same flags or delete it")
        }
        if case .string(let s)? = info["stage"], s != stage { throw NNError("\(path) belongs to stage \(s), not \(stage)") }
        try model.load(from: b)
        guard step <= UInt64(Int.max), optSteps <= UInt64(Int.max) else { throw NNError("\(path): step counts out of range") }
        try optimizer.restore(from: b, steps: Int(optSteps))
        return Int(step)
    }
}

/// The metrics JSON-lines file.
public enum MetricsLog {
    /// Appends one line, every write checked (an `OutputError` when it fails), and rewrites the
    /// CSV twin (`csvPath`) from the whole log.
    public static func append(_ path: String, _ line: String) throws {
        try AppendLog.append(path, line)
        try writeCSV(from: path)
    }

    /// `run.metrics.jsonl` → `run.metrics.csv`.
    public static func csvPath(_ path: String) -> String { (path.hasSuffix(".jsonl") ? String(path.dropLast(6)) : path) + ".csv" }

    /// The columns every log has, in this order; any others follow in the order first seen.
    static let leading = [
        "epoch", "step", "stage", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "eval_loss", "eval_accuracy", "seconds",
        "images_per_second",
    ]

    /// The JSON lines log as one CSV table (a header of every key; an empty field where a line
    /// lacks one), for spreadsheets and plotting tools. Written atomically after every line, so it
    /// follows the log through resumes and truncation.
    public static func writeCSV(from path: String) throws {
        guard SafeFile.fileType(path) == .regular, let bytes = try? SafeFile.readAll(path, limit: 1 << 26) else { return }
        var rows: [[String: Any]] = []
        var columns = leading
        var present = Set<String>()
        for line in bytes.split(separator: 0x0A) where !line.isEmpty {
            guard let row = try? MiniJSON.parse(Array(line)) as? [String: Any] else { continue }
            rows.append(row)
            for key in row.keys.sorted() where !columns.contains(key) { columns.append(key) }
            present.formUnion(row.keys)
        }
        columns = columns.filter { present.contains($0) }
        var out = Array(columns.joined(separator: ",").utf8) + [0x0A]
        for row in rows {
            let fields = columns.map { key -> [UInt8] in
                switch row[key] {
                case let d as Double: return Array((d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : "\(d)").utf8)
                case let s as String: return CSVField.encode(s)
                case let b as Bool: return Array((b ? "true" : "false").utf8)
                default: return []
                }
            }
            out += Array(fields.joined(separator: [0x2C])) + [0x0A]
        }
        try AtomicOutput.write(out, to: csvPath(path))
    }

    /// Drops lines of `stage` beyond `step` (left by a run that was killed after its last checkpoint).
    static func truncate(_ path: String, afterStep step: Int, stage: String) throws {
        guard SafeFile.fileType(path) == .regular, let f = fopen(path, "r") else { return }
        var kept: [String] = []
        var buf = [CChar](repeating: 0, count: 1 << 16)
        while fgets(&buf, Int32(buf.count), f) != nil {
            let line = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingSuffix("\n")
            if step == 0 && line.contains("\"stage\":\"\(stage)\"") { continue }
            if let r = line.range(of: "\"step\":"), line.contains("\"stage\":\"\(stage)\"") {
                let digits = line[r.upperBound...].prefix(while: { $0.isNumber })
                if let s = Int(digits), s > step { continue }
            }
            kept.append(line)
        }
        fclose(f)
        try AtomicOutput.write(kept.map { $0 + "\n" }.joined(), to: path)
        try writeCSV(from: path)
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
    func range(of needle: String) -> Range<String.Index>? {
        guard !needle.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
