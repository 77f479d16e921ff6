import ArgumentParser
import KDBundle
import KDData
import KDNN
import KDTensor

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model bundle on labelled data and write the trained bundle.",
        discussion: """
            Defaults follow the reference recipe: SGD momentum 0.9, lr 0.05 with per-step cosine decay to 0,
            weight decay 5e-4, batch 128, random crops from zero-padded images (plus flips for colour images),
            10 epochs. Progress goes to stderr; per-epoch metrics are appended as JSON lines to
            OUTPUT.metrics.jsonl; a checkpoint OUTPUT.ckpt.kdb is written every epoch (and every
            --checkpoint-every steps). After a crash, kill or Ctrl-C, run the same command with --resume:
            the result is identical to an uninterrupted run with the same seed and thread count.

            Examples:
              kdtool train lenet5.kdb --data ../shared/data/mnist -o lenet5-trained.kdb
              kdtool train r20.kdb --data cifar-10-binary-subset.tar.gz --epochs 30 --eval-split eval -o r20-trained.kdb
              kdtool train model.kdb --data digits.csv.gz --epochs 5 --checkpoint-every 20 --resume -o out.kdb
            """)

    @Argument(help: "The model bundle to train (from `kdtool init`, or already trained).")
    var model: String

    @OptionGroup var data: DataOptions
    @OptionGroup var training: TrainingOptions

    @Option(help: "Split to train on.")
    var split: Split = .train

    @Option(help: "Also evaluate on this split after every epoch and at the end (reporting only).")
    var evalSplit: Split?

    @Flag(help: "No progress output.")
    var quiet = false

    @Option(name: .shortAndLong, help: "Output bundle.")
    var output: String

    func run() throws {
        Interruption.install()
        let (model, bundle) = try loadModel(self.model)
        let parentDigest = try withBundleErrors { try bundle.contentDigest() }
        let progress = ProgressLine()
        progress.quiet = quiet
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let (trainSet, evalSet) = try reportingErrors { () throws -> (Dataset, Dataset?) in
            let t = try data.load(split, shape: prep.shape, prep: prep)
            return (t, try evalSplit.map { try data.load($0, shape: prep.shape, prep: prep) })
        }
        try reportingErrors { try checkCompatible(model, trainSet) }
        if model.labels == nil || model.labels!.classes == (0..<model.labels!.classes.count).map(String.init) {
            if trainSet.classes.count == model.classCount { model.labels = Labels(trainSet.classes) }
        }
        var config = training.config
        config.threads = training.threads
        let aug = training.augmentation(for: trainSet)
        let batches = Batcher(
            trainSet, batchSize: config.batchSize, shuffle: true, augmentation: aug, normalization: prep.normalization, seed: config.seed)
        let evalBatches = evalSet.map {
            Batcher($0, batchSize: 256, shuffle: false, normalization: prep.normalization, seed: 0)
        }
        let trainer = Trainer(
            model: model, config: config, train: batches, eval: evalBatches, checkpointPath: Companion.checkpoint(output),
            metricsPath: Companion.metrics(output))
        trainer.shouldStop = { Interruption.isRequested }
        trainer.onProgress = { p in
            let fraction = (Double(p.epoch - 1) + Double(p.batch) / Double(p.batches)) / Double(p.epochs)
            progress.update(
                "epoch \(p.epoch)/\(p.epochs)  batch \(p.batch)/\(p.batches)  loss \(Text.fixed(p.loss, 4))  acc \(Text.fixed(100 * p.accuracy, 2))%  \(Text.grouped(Int(p.imagesPerSecond))) img/s",
                fraction: fraction)
        }
        trainer.onEpoch = { m in
            var line =
                "epoch \(m.epoch)/\(config.epochs): loss \(Text.fixed(m.trainLoss, 4)), train acc \(Text.fixed(100 * m.trainAccuracy, 2))%"
            if let a = m.evalAccuracy { line += ", \(evalSplit!.rawValue) acc \(Text.fixed(100 * a, 2))%" }
            line += ", \(Text.fixed(m.seconds, 1)) s, \(Text.grouped(Int(m.imagesPerSecond))) img/s"
            progress.finish(line)
        }
        if !quiet {
            warn(
                "training \(self.model) (\(Text.grouped(model.parameterCount)) parameters) on \(trainSet.count) images from \(data.data) [\(split.rawValue)], \(config.epochs) epochs, batch \(config.batchSize), \(config.threads) threads"
            )
        }
        let started = monotonic()
        let resumedAt: Int
        do {
            resumedAt = try reportingErrors { try trainer.run(resume: training.resume) }
        } catch let e as Trainer.Interrupted {
            progress.finish("kdtool: \(e); continue with the same command plus --resume")
            throw ExitCode(130)
        }
        if resumedAt > 0 && !quiet { warn("resumed from step \(resumedAt)") }
        if Profiler.enabled { warn("time per op (KDTOOL_PROFILE):\n" + Profiler.report()) }
        let seconds = monotonic() - started
        var metrics: [String: Value] = ["seconds": .float(seconds)]
        if let last = trainer.history.last {
            metrics["train_loss"] = .float(last.trainLoss)
            metrics["train_accuracy"] = .float(last.trainAccuracy)
            if let a = last.evalAccuracy { metrics["eval_accuracy"] = .float(a) }
            if let l = last.evalLoss { metrics["eval_loss"] = .float(l) }
            let images = trainer.history.reduce(0.0) { $0 + $1.imagesPerSecond * $1.seconds }
            metrics["images_per_second"] = .float(images / max(trainer.history.reduce(0) { $0 + $1.seconds }, 1e-9))
        }
        var hp = config.hyperparameters
        hp["augment"] = .string(aug.isNone ? "none" : "pad\(aug.padCrop)-crop\(aug.horizontalFlip ? "-flip" : "")")
        model.provenance = Provenance(
            method: "train", parents: [.init(role: "init", digest: parentDigest)], hyperparameters: hp,
            data: [
                "source": .string(data.data), "split": .string(split.rawValue), "count": .uint(UInt64(trainSet.count)),
                "digest": .string(trainSet.digest),
            ], seed: Int64(bitPattern: config.seed), metrics: metrics)
        model.preprocessing = prep
        let result = try withBundleErrors { try BundleWriter.write(model.contents(), to: output) }
        let summary =
            trainer.history.last.map { m in
                "train acc \(Text.fixed(100 * m.trainAccuracy, 2))%"
                    + (m.evalAccuracy.map { ", \(evalSplit!.rawValue) acc \(Text.fixed(100 * $0, 2))%" } ?? "")
            } ?? ""
        print("\(output): \(summary), \(Text.fixed(seconds, 1)) s")
        print("content digest \(result.contentDigest)")
    }
}

/// The data must fit the model: same input shape, labels within the outputs.
func checkCompatible(_ model: Model, _ d: Dataset) throws {
    let want = Array(model.inputShape.dropFirst())
    guard want == d.shape else {
        throw NNError("the data \(d.source) has images of \(d.shape) but the model expects \(want)")
    }
    let k = model.classCount
    if let bad = d.labels.first(where: { $0 >= k }) {
        throw NNError("the data \(d.source) has label \(bad) but the model has \(k) outputs")
    }
}
