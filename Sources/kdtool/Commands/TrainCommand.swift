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
            Defaults follow the reference recipe: SGD momentum 0.9, lr 0.05 with per-step cosine decay to 0, weight decay 5e-4, batch 128, random crops from zero-padded images (plus flips for colour images), 10 epochs. Progress goes to stderr; per-epoch metrics are appended as JSON lines to OUTPUT.metrics.jsonl; a checkpoint OUTPUT.ckpt.kdb is written every epoch (and every
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
    @OptionGroup var io: RunOptions

    func run() throws {
        let (model, bundle) = try loadModel(self.model)
        let parent = try withBundleErrors { try bundle.contentDigest() }
        var job = TrainingRun(
            modelPath: self.model, model: model, data: data, training: training, split: io.split, evalSplit: io.evalSplit, quiet: io.quiet,
            output: io.output, method: "train")
        job.parents = [.init(role: "init", digest: parent)]
        try job.execute { _, _, _ in }
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
