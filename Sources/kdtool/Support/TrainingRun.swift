import ArgumentParser
import KDBundle
import KDData
import KDIO
import KDNN
import KDTensor

/// One training run as `train` and `distill` perform it: data, batches, progress, checkpoints,
/// interruption, provenance and the output bundle. Methods plug in through `configure`.
struct TrainingRun {
    let modelPath: String
    let model: Model
    let data: DataOptions
    let training: TrainingOptions
    let split: Split
    let evalSplit: Split?
    let quiet: Bool
    let output: String
    /// PROV method name (train, kd, …).
    let method: String
    var parents: [Provenance.Parent] = []
    var extraHyperparameters: [String: Value] = [:]
    /// Settings a resumed run must share (part of the checkpoint fingerprint).
    var methodSettings: [String: Value] = [:]
    /// The bundle whose metrics log receives the epochs (default: `output`); stage 1 of a
    /// two-stage method logs next to the final output so one file holds both stages.
    var metricsFor: String?
    /// Train only on these classes (by name), relabelled in this order (a specialist).
    var classSubset: [String]?
    /// Rewrites the loaded train and eval data (a specialist's mix).
    var datasetTransform: ((Dataset) throws -> Dataset)?
    /// False for methods that never read labels (distill --no-labels), which may train on an unlabelled folder.
    var needsLabels = true
    /// Last changes to the trained model before it is written.
    var beforeWrite: ((Model) -> Void)?

    func execute(configure: (Trainer, Dataset, Augmentation) throws -> Void) throws {
        let world = Cluster.world
        world.timeout = training.rankTimeout
        // Rank 0 alone writes the output (and holds its lock); every rank trains.
        let lock = world.isRoot ? try preflight(output: output) : nil
        defer { withExtendedLifetime(lock) {} }
        Interruption.install()
        let progress = ProgressLine()
        progress.quiet = quiet
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let (trainSet, evalSet) = try reportingErrors { () throws -> (Dataset, Dataset?) in
            var t = try data.load(split, shape: prep.shape, prep: prep)
            var e = try evalSplit.map { try data.load($0, shape: prep.shape, prep: prep) }
            if let classSubset {
                t = try t.restricted(to: classSubset)
                e = try e?.restricted(to: classSubset)
            }
            if let datasetTransform {
                t = try datasetTransform(t)
                e = try e.map(datasetTransform)
            }
            return (t, e)
        }
        var config = training.config
        config.threads = training.threads
        config.methodSettings = methodSettings.merging([
            "keep": .string(training.keep.rawValue), "val_fraction": .float(training.keep == .best ? training.valFraction : 0),
        ]) { a, _ in a }
        if model.metadata["kdtool.arch"] == nil && !quiet {
            // An eval-mode PyTorch export folds BatchNorm into the convolutions; fine-tuning such a graph trains far worse.
            let convs = model.graph.nodes.filter { $0.op == .conv2d }.count
            let norms = model.graph.nodes.filter { $0.op == .batchnorm }.count
            if convs >= 2 && norms == 0 {
                warn(
                    "kdtool: warning: \(modelPath) has \(convs) convolutions and no batch normalisation: if it was exported from PyTorch in eval mode, "
                        + "BatchNorm was folded into the convolutions and fine-tuning will train much worse; export with "
                        + "torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE) to keep it (docs/guide.md, importing)")
            }
        }
        // The run itself (holdout, checks, batches, trainer, kept weights' metrics) is KDNN's TrainingJob.
        let aug = training.augmentation(for: trainSet)
        var job = TrainingJob(model: model, train: trainSet, config: config, normalization: prep.normalization)
        job.eval = evalSet
        job.augmentation = aug
        job.keepBest = training.keep == .best
        job.validationFraction = training.valFraction
        job.checkpointPath = Companion.checkpoint(output)
        job.metricsPath = Companion.metrics(metricsFor ?? output)
        job.bestPath = Companion.best(output)
        job.stepLogPath = Companion.stem(metricsFor ?? output) + ".steps.jsonl"
        job.needsLabels = needsLabels
        job.shouldStop = { Interruption.isRequested }
        job.onProgress = { p in
            let fraction = (Double(p.epoch - 1) + Double(p.batch) / Double(p.batches)) / Double(p.epochs)
            progress.update(
                "epoch \(p.epoch)/\(p.epochs)  batch \(p.batch)/\(p.batches)  loss \(Text.fixed(p.loss, 4))\(needsLabels ? "  acc \(Text.fixed(100 * p.accuracy, 2))%" : "")  \(Text.grouped(Int(p.imagesPerSecond))) img/s",
                fraction: fraction)
        }
        job.onEpoch = { m in
            var line =
                "epoch \(m.epoch)/\(config.epochs): loss \(Text.fixed(m.trainLoss, 4))\(needsLabels ? ", train acc \(Text.fixed(100 * m.trainAccuracy, 2))%" : " (unlabelled)")"
            if let v = m.extra["val_accuracy"] { line += ", validation acc \(Text.fixed(100 * v, 2))%" }
            if let a = m.evalAccuracy { line += ", \(evalSplit?.rawValue ?? "eval") acc \(Text.fixed(100 * a, 2))%" }
            line += ", \(Text.fixed(m.seconds, 1)) s, \(Text.grouped(Int(m.imagesPerSecond))) img/s"
            progress.finish(line)
        }
        let method = self.method
        let modelPath = self.modelPath
        let quiet = self.quiet
        let source = data.data
        let splitName = split.rawValue
        job.onReady = { j in
            if !quiet {
                warn(
                    "\(method == "train" ? "training" : "distilling (\(method)) into") \(modelPath) (\(Text.grouped(j.model.parameterCount)) parameters) on \(j.train.count) images from \(source) [\(splitName)], \(config.epochs) epochs, batch \(config.batchSize), \(config.threads) threads\(world.isDistributed ? " × \(world.size) ranks" : "")"
                )
            }
        }
        var outcome: TrainingJob.Result?
        try runInterruptibly(progress: progress, quiet: quiet) {
            let r = try job.run(resume: training.resume) { trainer, set, aug in try configure(trainer, set, aug) }
            outcome = r
            return r.resumedAt
        }
        guard let result = outcome else { return }
        if Profiler.enabled { warn("time per op (--debug-profile):\n" + Profiler.report()) }
        let seconds = result.seconds
        let metrics = result.metrics
        var hp = config.hyperparameters.merging(extraHyperparameters) { _, b in b }
        hp["keep"] = .string(training.keep.rawValue)
        if result.validationCount != nil {
            hp["val_fraction"] = .float(training.valFraction)
            if case .uint(let e)? = metrics["stopped_early_after_epoch"], !quiet {
                let best = metrics["best_epoch"].flatMap { v -> UInt64? in if case .uint(let b) = v { b } else { nil } } ?? e
                warn(
                    "stopped early after epoch \(e) of \(config.epochs): validation accuracy had not improved for \(config.patience) epoch\(config.patience == 1 ? "" : "s"); keeping epoch \(best)'s weights"
                )
            }
        }
        hp["augment"] = .string(aug.isNone ? "none" : "pad\(aug.padCrop)-crop\(aug.horizontalFlip ? "-flip" : "")")
        if !Invocation.arguments.isEmpty {
            hp["argv"] = .array(Invocation.arguments.map { .string($0) })
            hp["cwd"] = .string(currentDirectory())
        }
        if let file = Invocation.configFile { hp["config"] = .string(file) }
        if !KernelPolicy.changes.isEmpty { hp["kernels"] = .array(KernelPolicy.changes.map { .string($0) }) }
        if world.isDistributed {
            hp["ranks"] = .uint(UInt64(world.size))
            hp["bucket_kb"] = .uint(UInt64(config.bucketBytes(on: world) >> 10))
        }
        model.provenance = Provenance(
            method: method, parents: parents, hyperparameters: hp,
            data: [
                "source": .string(data.data), "split": .string(split.rawValue), "count": .uint(UInt64(result.trainCount)),
                "digest": .string(result.trainDigest),
            ], seed: Int64(bitPattern: config.seed), metrics: metrics)
        model.preprocessing = prep
        beforeWrite?(model)
        guard world.isRoot else { return }
        let written = try withBundleErrors { try BundleWriter.write(model.contents(), to: output) }
        if Invocation.configFile != nil, metricsFor == nil {
            try writeText(RunConfig.resolved(Invocation.arguments), to: Companion.config(output))
        }
        var summary =
            result.history.last.map { m in
                needsLabels
                    ? "train acc \(Text.fixed(100 * m.trainAccuracy, 2))%" : "loss \(Text.fixed(m.trainLoss, 4)) (unlabelled transfer set)"
            } ?? ""
        if case .float(let a)? = metrics["eval_accuracy"], let evalSplit {
            summary += ", \(evalSplit.rawValue) acc \(Text.fixed(100 * a, 2))%"
        }
        if case .uint(let e)? = metrics["best_epoch"], case .float(let v)? = metrics["val_accuracy"] {
            summary += ", kept epoch \(e) (validation acc \(Text.fixed(100 * v, 2))%)"
        }
        print("\(output): \(summary), \(Text.fixed(seconds, 1)) s")
        print("content digest \(written.contentDigest)")
    }
}

/// Before any work: the output's folder must exist and be writable, no other run may be writing
/// the same output (the returned lock is held for the run), and what provenance will record
/// (arguments, working folder) must fit in a bundle. A run that cannot keep its result stops here.
func preflight(output: String, isFolder: Bool = false) throws -> OutputLock {
    try reportingErrors {
        try AtomicOutput.checkWritable(output, isFolder: isFolder)
        let recorded = Invocation.arguments + [currentDirectory()]
        if let long = recorded.first(where: { $0.utf8.count > Value.maxStringBytes }) {
            throw InputError(
                "",
                "the argument or folder '\(long.prefix(40))…' is \(long.utf8.count) bytes; provenance holds at most \(Value.maxStringBytes) bytes a string"
            )
        }
        return try OutputLock(output)
    }
}

/// Runs a training loop; Ctrl-C/SIGTERM (which the loop turns into a checkpoint and `Interrupted`)
/// ends the command with exit 130 and a hint to resume.
func runInterruptibly(progress: ProgressLine, quiet: Bool, _ body: () throws -> Int) throws {
    let resumedAt: Int
    do {
        resumedAt = try reportingErrors(body)
    } catch let e as Trainer.Interrupted {
        // Printed even with --quiet: it is the only way to learn that the work can be continued.
        progress.quiet = false
        progress.finish("kdtool: \(e); continue with the same command plus --resume")
        throw ExitCode(130)
    }
    if resumedAt > 0 && !quiet { warn("resumed from step \(resumedAt)") }
}
