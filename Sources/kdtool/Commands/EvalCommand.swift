import ArgumentParser
import KDBundle
import KDData
import KDNN
import KDTensor

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss, per-class accuracy and confusion matrix of a model on labelled data.",
        discussion: """
            --json prints one document with at least: accuracy, loss, count, per_class[], confusion[][], classes[].

            Examples:
              kdtool eval lenet5-trained.kdb --data ../shared/data/mnist
              kdtool eval model.kdb --data photos/ --split all --json
            """)

    @Argument(help: "The model bundle.")
    var model: String

    @OptionGroup var data: DataOptions

    @Option(help: "Split to evaluate on.")
    var split: Split = .eval

    @Option(help: "Batch size.")
    var batch: Int = 256

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Flag(help: "Print one JSON document.")
    var json = false

    func run() throws {
        Parallel.configure(threads: threads)
        let (model, _) = try loadModel(self.model)
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let set = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        try reportingErrors { try checkCompatible(model, set) }
        let started = monotonic()
        let e = try reportingErrors {
            try model.evaluate(Batcher(set, batchSize: batch, shuffle: false, normalization: prep.normalization, seed: 0), fused: true)
        }
        let seconds = monotonic() - started
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        if json {
            let doc = JSON.object([
                ("model", .string(self.model)), ("data", .string(data.data)), ("split", .string(split.rawValue)), ("count", .int(e.count)),
                ("accuracy", .number(e.accuracy)), ("loss", .number(e.loss)), ("errors", .int(e.count - e.correct)),
                ("classes", .array(names.map { .string($0) })),
                ("per_class", .array(e.perClassAccuracy.map { $0.map { .number($0) } ?? .null })),
                ("confusion", .array(e.confusion.map { .array($0.map { .int($0) }) })), ("seconds", .number(seconds)),
                ("images_per_second", .number(Double(e.count) / max(seconds, 1e-9))),
            ])
            print(doc.render())
            return
        }
        print("\(self.model) on \(data.data) [\(split.rawValue)], \(e.count) images")
        print("  accuracy  \(Text.fixed(100 * e.accuracy, 2))%  (\(e.count - e.correct) errors)")
        print("  loss      \(Text.fixed(e.loss, 4))")
        print("  speed     \(Text.grouped(Int(Double(e.count) / max(seconds, 1e-9)))) images/s (\(threads) threads)")
        print("\nPer class")
        print(
            Text.table(
                ["class", "count", "accuracy"],
                e.perClassAccuracy.enumerated().map { k, a in
                    [
                        k < names.count ? names[k] : String(k), String(e.confusion[k].reduce(0, +)),
                        a.map { Text.fixed(100 * $0, 2) + "%" } ?? "—",
                    ]
                }, right: [1, 2]))
        print("\nConfusion matrix (rows: true class, columns: predicted)")
        let k = e.confusion.count
        print(
            Text.table(
                [""] + (0..<k).map { $0 < names.count ? String(names[$0].prefix(6)) : String($0) },
                e.confusion.enumerated().map { i, row in [i < names.count ? String(names[i].prefix(10)) : String(i)] + row.map(String.init)
                },
                right: Set(1...k)))
    }
}
