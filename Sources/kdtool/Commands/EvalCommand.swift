import ArgumentParser
import KDBundle
import KDData
import KDDistill
import KDIO
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss, per-class accuracy and confusion matrix of a model on labelled data.",
        discussion: """
            --json prints one document with at least: accuracy, loss, count, per_class[], confusion[][], classes[]. \
            With several bundles, each is evaluated and so is their ensemble (the mean of their output \
            distributions); --json then prints {"models": [...], "ensemble": {...}}.

            Examples:
              kdtool eval lenet5-trained.kdb --data data/mnist
              kdtool eval model.kdb --data photos/ --split all --json
              kdtool eval s1.kdb s2.kdb s3.kdb --data data/mnist     # members and their ensemble
              mpirun -np 2 kdtool eval model.kdb --data data/mnist --json   # one model's batches split across ranks
            """)

    @Argument(help: "The model bundle (several: each, and their ensemble).")
    var models: [String]

    @OptionGroup var data: DataOptions

    @Option(
        name: .customLong("split"),
        help: "Split to evaluate on (default: eval; a folder of images, which has no split of its own, is evaluated whole).")
    var splitOption: Split?

    /// The split to evaluate: as given, else `eval`, except for a folder of images, evaluated whole
    /// (its eval split would be a seeded 20 % holdout, a surprise for someone evaluating a folder).
    var split: Split { splitOption ?? (DataSource.isImageFolder(data.data) ? .all : .eval) }

    @Option(help: "Batch size.")
    var batch: Int = 256

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Flag(help: "Print one JSON document.")
    var json = false

    @Option(
        help:
            "Evaluate only on these classes of the data (names, comma-separated; default: all, or the model's own when it is a specialist)."
    )
    var classes: String?

    @Option(
        help:
            "Verticals JSON (from `kdtool verticals`): also report average precision per vertical (its images, its classes' scores) and their mean (mAP)."
    )
    var verticals: String?

    @Option(
        help:
            "A folder of specialists (from `distill --method specialist`): combine them with this generalist (Hinton et al.'s KL objective)."
    )
    var specialists: String?

    func run() throws {
        Parallel.configure(threads: threads)
        if models.count > 1 { return try runEnsemble() }
        let (model, _) = try loadModel(self.models[0])
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let modelClasses = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        var set = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        if splitOption == nil && split == .all {
            warn(
                "evaluating all \(set.count) images of \(data.data) (a folder has no split of its own; --split eval evaluates the seeded holdout that train leaves out)"
            )
        }
        if let specialists { return try runSpecialists(generalist: model, folder: specialists, set: set, prep: prep) }
        if let verticals { return try runVerticals(model: model, file: verticals, set: set, prep: prep) }
        if let subset = classes.map({ $0.split(separator: ",").map { String($0).trimmingSpaces } })
            ?? specialistClasses(modelClasses, set)
        {
            set = try reportingErrors { try set.restricted(to: subset) }
        }
        try reportingErrors { try checkCompatible(model, set) }
        let started = monotonic()
        let e = try reportingErrors {
            // Under mpirun the batches are split across the ranks and their counts summed.
            try model.evaluate(
                Batcher(set, batchSize: batch, shuffle: false, normalization: prep.normalization, seed: 0), world: Cluster.world,
                fused: true)
        }
        let seconds = monotonic() - started
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        if json {
            let doc = JSON.object([
                ("model", .string(self.models[0])), ("data", .string(data.data)), ("split", .string(split.rawValue)),
                ("count", .int(e.count)),
                ("accuracy", .number(e.accuracy)), ("loss", .number(e.loss)), ("errors", .int(e.count - e.correct)),
                ("classes", .array(names.map { .string($0) })),
                ("per_class", .array(e.perClassAccuracy.map { $0.map { .number($0) } ?? .null })),
                ("confusion", .array(e.confusion.map { .array($0.map { .int($0) }) })), ("seconds", .number(seconds)),
                ("images_per_second", .number(Double(e.count) / max(seconds, 1e-9))),
            ])
            print(doc.render())
            return
        }
        print("\(self.models[0]) on \(data.data) [\(split.rawValue)], \(e.count) images")
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

extension EvalCommand {
    /// Several bundles on the same images: each one's accuracy and loss, and the ensemble's
    /// (the mean of their softmax distributions).
    func runEnsemble() throws {
        let loaded = try models.map { try loadModel($0).0 }
        let first = loaded[0]
        let prep =
            first.preprocessing ?? Preprocessing(channels: first.inputShape[1], height: first.inputShape[2], width: first.inputShape[3])
        let set = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        try reportingErrors { try checkCompatible(first, set) }
        let result = try reportingErrors { try Ensemble.evaluate(loaded, on: set, normalization: prep.normalization, batchSize: batch) }
        let (each, ensemble) = (result.members, result.ensemble)
        if json {
            func doc(_ name: String, _ e: Evaluation) -> JSON {
                .object([
                    ("model", .string(name)), ("accuracy", .number(e.accuracy)), ("loss", .number(e.loss)), ("count", .int(e.count)),
                    ("errors", .int(e.count - e.correct)),
                ])
            }
            print(
                JSON.object([
                    ("data", .string(data.data)), ("split", .string(split.rawValue)),
                    ("models", .array(zip(models, each).map { doc($0, $1) })), ("ensemble", doc("ensemble", ensemble)),
                    ("mean_member_accuracy", .number(result.meanMemberAccuracy)),
                ]
                ).render())
            return
        }
        print("\(models.count) models on \(data.data) [\(split.rawValue)], \(ensemble.count) images")
        let rows = zip(models, each).map { [$0, Text.fixed(100 * $1.accuracy, 2) + "%", Text.fixed($1.loss, 4)] }
        print(
            Text.table(
                ["model", "accuracy", "loss"],
                rows + [["ensemble (mean of distributions)", Text.fixed(100 * ensemble.accuracy, 2) + "%", Text.fixed(ensemble.loss, 4)]],
                right: [1, 2]))
    }
}

/// A specialist (its labels a strict subset of the data's classes) is evaluated on its own classes.
func specialistClasses(_ model: [String], _ set: Dataset) -> [String]? {
    model.count < set.classes.count && Set(model).isSubset(of: set.classes) ? model : nil
}

extension EvalCommand {
    /// Per-vertical average precision: for each vertical the model covers, the images of its
    /// classes, and for each of its classes the AP of the model's score for it; mAP over verticals.
    func runVerticals(model: Model, file: String, set: Dataset, prep: Preprocessing) throws {
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        let map = try reportingErrors { try KC.verticals(json: file, classes: set.classes) }
        let rows = try reportingErrors {
            try KC.verticalAP(model, verticals: map, data: set, normalization: prep.normalization, batchSize: batch)
        }
        guard !rows.isEmpty else {
            warn("kdtool: error: \(models[0]) covers none of the verticals in \(file) (its classes: \(names.joined(separator: ",")))")
            throw ExitCode.failure
        }
        let mAP = rows.map(\.ap).reduce(0, +) / Double(rows.count)
        if json {
            print(
                JSON.object([
                    ("model", .string(models[0])), ("data", .string(data.data)), ("split", .string(split.rawValue)),
                    (
                        "verticals",
                        .array(
                            rows.map {
                                .object([
                                    ("name", .string($0.name)), ("classes", .array($0.classes.map { .string($0) })), ("ap", .number($0.ap)),
                                    ("images", .int($0.images)),
                                ])
                            })
                    ), ("map", .number(mAP)),
                ]
                ).render())
            return
        }
        print("\(models[0]) on \(data.data) [\(split.rawValue)]: average precision per vertical (its images, its classes)")
        print(
            Text.table(
                ["vertical", "classes", "images", "AP"],
                rows.map { [$0.name, $0.classes.joined(separator: " "), String($0.images), Text.fixed(100 * $0.ap, 2)] } + [
                    ["mean (mAP)", "", "", Text.fixed(100 * mAP, 2)]
                ], right: [2, 3]))
    }
}

extension EvalCommand {
    /// Generalist + specialists: for each image, the specialists whose groups contain the
    /// generalist's top class take part in minimising KL(p_g ‖ q) + Σ_m KL(p_m ‖ q_m).
    func runSpecialists(generalist: Model, folder: String, set: Dataset, prep: Preprocessing) throws {
        let classes = generalist.labels?.classes ?? (0..<generalist.classCount).map(String.init)
        guard let dir = opendir(folder) else {
            warn("kdtool: error: \(folder): cannot open the specialists folder")
            throw ExitCode.failure
        }
        var files: [String] = []
        while let e = readdir(dir) {
            let name = PathCoding.entryName(e)
            if name.hasSuffix(".kdb") && !name.contains(".ckpt.") && !name.contains(".best.") { files.append("\(folder)/\(name)") }
        }
        closedir(dir)
        files.sort()
        var specialists: [(path: String, model: Model, group: [Int])] = []
        for f in files {
            let (m, _) = try loadModel(f)
            guard let group = try reportingErrors({ try Specialists.group(of: m, generalistClasses: classes, name: f) }) else { continue }
            specialists.append((f, m, group))
        }
        guard !specialists.isEmpty else {
            warn("kdtool: error: \(folder) holds no specialist bundles (labels ending in \(Specialists.dustbin))")
            throw ExitCode.failure
        }
        try reportingErrors { try checkCompatible(generalist, set) }
        let result = try reportingErrors {
            try Specialists.evaluate(
                generalist: generalist, specialists: specialists.map { ($0.model, $0.group) }, data: set,
                normalization: prep.normalization, batchSize: batch)
        }
        let rows = result.rows.map { r in (r.covering, (r.images, r.generalistCorrect, r.combinedCorrect)) }
        let (gCorrect, cCorrect, total) = (result.generalistCorrect, result.combinedCorrect, result.total)
        if json {
            print(
                JSON.object([
                    ("generalist", .string(models[0])), ("specialists", .array(specialists.map { .string($0.path) })),
                    ("count", .int(total)), ("generalist_accuracy", .number(Double(gCorrect) / Double(max(total, 1)))),
                    ("combined_accuracy", .number(Double(cCorrect) / Double(max(total, 1)))),
                    (
                        "by_covering_specialists",
                        .array(
                            rows.map { c, r in
                                .object([
                                    ("covering", .int(c)), ("images", .int(r.0)),
                                    ("generalist_accuracy", .number(Double(r.1) / Double(max(r.0, 1)))),
                                    ("combined_accuracy", .number(Double(r.2) / Double(max(r.0, 1)))),
                                ])
                            })
                    ),
                ]
                ).render())
            return
        }
        print("\(models[0]) + \(specialists.count) specialists on \(data.data) [\(split.rawValue)], \(total) images")
        print(
            Text.table(
                ["specialists covering the true class", "images", "generalist", "with specialists"],
                rows.map { c, r in
                    [
                        String(c), String(r.0), Text.fixed(100 * Double(r.1) / Double(max(r.0, 1)), 2) + "%",
                        Text.fixed(100 * Double(r.2) / Double(max(r.0, 1)), 2) + "%",
                    ]
                } + [
                    [
                        "all", String(total), Text.fixed(100 * Double(gCorrect) / Double(max(total, 1)), 2) + "%",
                        Text.fixed(100 * Double(cCorrect) / Double(max(total, 1)), 2) + "%",
                    ]
                ], right: [1, 2, 3]))
    }
}
