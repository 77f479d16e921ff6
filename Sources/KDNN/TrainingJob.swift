import KDBundle
import KDData
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// One training run, everything but its command line: the seeded validation holdout (model
/// selection never looks at the eval split), the data checked against the model, class names
/// adopted from the data, batches with augmentation and normalisation, the trainer with its
/// checkpoints, metrics log and early stopping, and the metrics of the weights it keeps. `kdtool
/// train` and every `distill` method build one, plug the method in through `configure`, and
/// record provenance around it.
///
///     var job = TrainingJob(model: m, train: trainSet, config: config, normalization: norm)
///     job.eval = evalSet
///     job.keepBest = true
///     let r = try job.run(resume: false) { trainer, data, augmentation in /* a method's objective */ }
///     print(r.metrics["eval_accuracy"] ?? .null)
public struct TrainingJob {
    public var model: Model
    /// The training split, before the validation holdout.
    public var train: Dataset
    /// Reported after every epoch and for the kept weights; never used for selection.
    public var eval: Dataset?
    public var config: TrainConfig
    public var augmentation: Augmentation = .none
    public var normalization: Normalization
    /// Hold out `validationFraction` of `train` (seeded by the run's seed) and keep the epoch with
    /// the best validation accuracy; `config.patience` stops early on it.
    public var keepBest = false
    public var validationFraction = 0.1
    public var checkpointPath: String?
    public var metricsPath: String?
    /// Where the best epoch's weights wait (with `keepBest`).
    public var bestPath: String?
    /// Per-step losses of the first `config.logSteps` steps go here.
    public var stepLogPath: String?
    /// False for methods that never read labels (an unlabelled transfer set).
    public var needsLabels = true
    public var shouldStop: () -> Bool = { false }
    public var onProgress: ((TrainProgress) -> Void)?
    public var onEpoch: ((EpochMetrics) -> Void)?
    /// Called once the training set is final (after the holdout), before the trainer is built:
    /// the job's `train` then holds what is trained on.
    public var onReady: ((TrainingJob) -> Void)?

    public init(model: Model, train: Dataset, config: TrainConfig, normalization: Normalization) {
        self.model = model
        self.train = train
        self.config = config
        self.normalization = normalization
    }

    public struct Result {
        public var history: [EpochMetrics]
        /// The step the run resumed from (0 for a fresh run).
        public var resumedAt: Int
        public var seconds: Double
        /// train/eval loss and accuracy, images per second, seconds, and with `keepBest` the
        /// validation count and accuracy, best epoch, early stop and the kept weights' eval figures.
        public var metrics: [String: Value]
        /// The images trained on (after the holdout) and their digest.
        public var trainCount: Int
        public var trainDigest: String
        public var validationCount: Int?
    }

    /// The data must fit the model: same input shape, labels within the outputs, labels at all
    /// (unless the method needs none).
    public static func checkFits(_ model: Model, _ d: Dataset, needsLabels: Bool = true) throws {
        if needsLabels && d.classes.isEmpty {
            throw NNError(
                "the data \(d.source) is a folder of unlabelled images; it serves only as a transfer set for `distill --no-labels`",
                code: .dataMismatch)
        }
        let want = Array(model.inputShape.dropFirst())
        guard want == d.shape else {
            throw NNError("the data \(d.source) has images of \(d.shape) but the model expects \(want)", code: .dataMismatch)
        }
        let k = model.classCount
        if let bad = d.labels.first(where: { $0 >= k }) {
            throw NNError("the data \(d.source) has label \(bad) but the model has \(k) outputs", code: .dataMismatch)
        }
    }

    /// Trains; `configure` plugs a method in (objective, teachers, frozen tensors) given the
    /// trainer, the training set and its augmentation.
    public func run(resume: Bool, configure: (Trainer, Dataset, Augmentation) throws -> Void = { _, _, _ in }) throws -> Result {
        var trainSet = train
        var validationSet: Dataset?
        if keepBest {
            let (rest, held) = trainSet.holdout(fraction: validationFraction, seed: config.seed ^ 0x7661_6c)
            trainSet = rest
            validationSet = held
        }
        try Self.checkFits(model, trainSet, needsLabels: needsLabels)
        // A model numbered 0…N−1 (a fresh `init`) takes the data's class names.
        if model.labels == nil || model.labels?.classes == (0..<(model.labels?.classes.count ?? 0)).map(String.init) {
            if trainSet.classes.count == model.classCount { model.labels = Labels(trainSet.classes) }
        }
        var ready = self
        ready.train = trainSet
        onReady?(ready)
        let batches = Batcher(
            trainSet, batchSize: config.batchSize, shuffle: true, augmentation: augmentation, normalization: normalization,
            seed: config.seed)
        batches.shard = (Cluster.world.rank, Cluster.world.size)
        let evalBatches = eval.map { Batcher($0, batchSize: 256, shuffle: false, normalization: normalization, seed: 0) }
        let trainer = Trainer(
            model: model, config: config, train: batches, eval: evalBatches, checkpointPath: checkpointPath, metricsPath: metricsPath)
        trainer.shouldStop = shouldStop
        trainer.stepLogPath = stepLogPath
        if let validationSet {
            trainer.validation = Batcher(validationSet, batchSize: 256, shuffle: false, normalization: normalization, seed: 0)
            trainer.bestPath = bestPath
        }
        try configure(trainer, trainSet, augmentation)
        trainer.onProgress = onProgress
        trainer.onEpoch = onEpoch
        let started = Self.now()
        let resumedAt = try trainer.run(resume: resume)
        let seconds = Self.now() - started
        var metrics: [String: Value] = ["seconds": .float(seconds)]
        if let last = trainer.history.last {
            metrics["train_loss"] = .float(last.trainLoss)
            metrics["train_accuracy"] = .float(last.trainAccuracy)
            if let a = last.evalAccuracy { metrics["eval_accuracy"] = .float(a) }
            if let l = last.evalLoss { metrics["eval_loss"] = .float(l) }
            let images = trainer.history.reduce(0.0) { $0 + $1.imagesPerSecond * $1.seconds }
            metrics["images_per_second"] = .float(images / max(trainer.history.reduce(0) { $0 + $1.seconds }, 1e-9))
        }
        if let validationSet {
            metrics["val_count"] = .uint(UInt64(validationSet.count))
            if let e = trainer.bestEpoch { metrics["best_epoch"] = .uint(UInt64(e)) }
            if let e = trainer.stoppedEarly { metrics["stopped_early_after_epoch"] = .uint(UInt64(e)) }
            if let v = trainer.bestValidationAccuracy { metrics["val_accuracy"] = .float(v) }
            // The kept weights are the best epoch's: the eval figures are for them, not for the last epoch.
            if let eval {
                let e = try model.evaluate(
                    Batcher(eval, batchSize: 256, shuffle: false, normalization: normalization, seed: 0), world: Cluster.world)
                metrics["eval_accuracy"] = .float(e.accuracy)
                metrics["eval_loss"] = .float(e.loss)
            }
        }
        return Result(
            history: trainer.history, resumedAt: resumedAt, seconds: seconds, metrics: metrics, trainCount: trainSet.count,
            trainDigest: trainSet.digest, validationCount: validationSet?.count)
    }

    /// Monotonic seconds, for run times.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
