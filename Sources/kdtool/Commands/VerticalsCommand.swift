import ArgumentParser
import KDBundle
import KDData
import KDDistill
import KDNN
import KDTensor

struct VerticalsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verticals",
        abstract:
            "Group confusable classes from a generalist's predictions (Hinton's specialists; the verticals of Knowledge Concentration).",
        discussion: """
            Runs the generalist on the data, forms the class covariance of its predicted distributions, and clusters the classes into --k groups with seeded k-means. Writes a JSON file: {"generalist": digest, "k": M, "verticals": [{"name", "classes": [indices], "labels": [names]}]}, and prints the groups.

            Examples:
              kdtool verticals teacher.kdb --data data/mnist --k 3 -o verticals.json
            """)

    @Argument(help: "The generalist model bundle.")
    var model: String

    @OptionGroup var data: DataOptions

    @Option(help: "Split to predict on.")
    var split: Split = .train

    @Option(help: "Number of groups.")
    var k: Int

    @Option(help: "Seed for k-means.")
    var seed: UInt64 = 0

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Option(name: .shortAndLong, help: "Output JSON file.")
    var output: String

    func run() throws {
        Parallel.configure(threads: threads)
        let (model, bundle) = try loadModel(self.model)
        let classes = model.classCount
        guard (1...classes).contains(k) else { throw ValidationError("--k must be within 1…\(classes) (the model's classes)") }
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let set = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        try reportingErrors { try checkCompatible(model, set) }
        let plan = try reportingErrors { try InferencePlan(model) }
        let batches = Batcher(set, batchSize: 256, shuffle: false, normalization: prep.normalization, seed: 0)
        let probs = Tensor(uninitialized: [set.count, classes])
        var row = 0
        for b in batches.prefetching(epoch: 0) {
            let p = try reportingErrors { try plan.probabilities(b.inputs) }
            probs.pointer.advanced(by: row * classes).update(from: p.pointer, count: p.count)
            row += b.labels.count
        }
        let groups = Verticals.group(probabilities: probs, count: k, seed: seed)
        let names = model.labels?.classes ?? (0..<classes).map(String.init)
        let doc = JSON.object([
            ("generalist", .string(try withBundleErrors { try bundle.contentDigest() })), ("data", .string(data.data)),
            ("split", .string(split.rawValue)), ("k", .int(k)), ("seed", .int(Int(seed))),
            (
                "verticals",
                .array(
                    groups.map { v in
                        .object([
                            ("name", .string(v.name)), ("classes", .array(v.classes.map { .int($0) })),
                            ("labels", .array(v.classes.map { .string(names[$0]) })),
                        ])
                    })
            ),
        ])
        let text = doc.render() + "\n"
        try writeText(text, to: output)
        for v in groups { print("\(v.name): \(v.classes.map { names[$0] }.joined(separator: " "))") }
        print("\(output): \(k) verticals over \(classes) classes from \(set.count) predictions")
    }
}

#if canImport(Glibc)
    import Glibc
#endif
