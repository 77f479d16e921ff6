import ArgumentParser
import KDBundle
import KDData
import KDDistill
import KDNN
import KDTensor

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model bundle on labelled data and write the trained bundle.",
        discussion: """
            Defaults follow the reference recipe: SGD momentum 0.9, lr 0.05 with per-step cosine decay to 0, weight decay 5e-4, batch 128, random crops from zero-padded images (plus flips for colour images), 10 epochs. Progress goes to stderr; per-epoch metrics are appended as JSON lines to OUTPUT.metrics.jsonl; a checkpoint OUTPUT.ckpt.kdb is written every epoch (and every \
            --checkpoint-every steps). After a crash, kill or Ctrl-C, run the same command with --resume:
            the result is identical to an uninterrupted run with the same seed and thread count.

            Examples:
              kdtool train lenet5.kdb --data data/mnist -o lenet5-trained.kdb
              kdtool train r20.kdb --data cifar-10-binary-subset.tar.gz --epochs 30 --eval-split eval -o r20-trained.kdb
              kdtool train model.kdb --data digits.csv.gz --epochs 5 --checkpoint-every 20 --resume -o out.kdb
              kdtool train spec.kdb --data data/mnist --loss sigmoid --classes 3,5,8 -o specialist-358.kdb
              mpirun -np 4 kdtool train r20.kdb --data cifar.tar.gz --threads 1 -o r20-trained.kdb     # data-parallel (docs/distributed.md)

            --loss sigmoid trains sigmoid outputs (one-vs-rest cross-entropy; the graph records the output kind, so eval, infer and export read them as sigmoids): the specialist teachers of Knowledge Concentration. --classes restricts the data to those classes (by name), in that order; the model needs exactly that many outputs.
            """)

    enum Loss: String, ExpressibleByArgument, CaseIterable { case softmax, sigmoid }

    @Argument(help: "The model bundle to train (from `kdtool init`, or already trained).")
    var model: String

    @Option(help: "Output kind and loss: softmax (cross-entropy) or sigmoid (one-vs-rest, for specialists).")
    var loss: Loss = .softmax

    @Option(help: "Train only on these classes of the data (names, comma-separated), in this order.")
    var classes: String?

    @OptionGroup var data: DataOptions
    @OptionGroup var training: TrainingOptions
    @OptionGroup var io: RunOptions
    @OptionGroup(title: "Preprocessing (replaces the bundle's PREP when given)") var prep: PreprocessingOptions

    func run() throws {
        if let seeds = io.seeds { return try SeedSweep.run(seeds: seeds, baseline: io.baseline, output: io.output) }
        let (model, bundle) = try loadModel(self.model)
        let subset = classes.map { $0.split(separator: ",").map { String($0).trimmingSpaces } }
        if let subset, subset.count != model.classCount {
            warn("kdtool: error: --classes names \(subset.count) classes but \(self.model) has \(model.classCount) outputs")
            throw ExitCode.failure
        }
        if let subset { model.labels = Labels(subset) }
        if loss == .sigmoid { model.graph.outputKind = .sigmoid }
        if prep.isSet, model.inputShape.count == 4 {
            let shape = Array(model.inputShape.dropFirst())
            let sample = prep.normalize == .data ? try reportingErrors { try data.load(io.split, shape: shape) } : nil
            model.preprocessing = try prep.preprocessing(shape: shape, base: model.preprocessing, data: sample)
            if !io.quiet, let p = model.preprocessing { warn(PreprocessingOptions.describe(p)) }
        }
        let parent = try withBundleErrors { try bundle.contentDigest() }
        var job = TrainingRun(
            modelPath: self.model, model: model, data: data, training: training, split: io.split, evalSplit: io.evalSplit, quiet: io.quiet,
            output: io.output, method: "train")
        job.parents = [.init(role: "init", digest: parent)]
        job.classSubset = subset
        if loss == .sigmoid || subset != nil {
            job.extraHyperparameters["loss"] = .string(loss.rawValue)
            job.methodSettings["loss"] = .string(loss.rawValue)
        }
        if let subset { job.extraHyperparameters["classes"] = .array(subset.map { .string($0) }) }
        try job.execute { trainer, _, _ in if loss == .sigmoid { trainer.trainSigmoid() } }
    }
}

/// The data must fit the model (KDNN's `TrainingJob.checkFits`).
func checkCompatible(_ model: Model, _ d: Dataset, needsLabels: Bool = true) throws {
    try TrainingJob.checkFits(model, d, needsLabels: needsLabels)
}
