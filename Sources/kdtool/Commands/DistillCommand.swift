import ArgumentParser
import KDBundle
import KDData
import KDDistill
import KDNN
import KDTensor

struct DistillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distil one or more teacher bundles into a student bundle.",
        discussion: """
            The last bundle is the student (from `kdtool init`, or already trained); the ones before it are \
            teachers. --method kd is Hinton et al.'s knowledge distillation:
              L = (1 − α)·CE(y, softmax(z_s)) + α·T²·KL(p_T ‖ softmax(z_s / T)),
            p_T the teacher's softmax at temperature T (with several teachers, the mean of theirs). The teachers run without autograd on the same (augmented) batch the student sees; without augmentation their outputs are computed once and reused every epoch. Everything `train` accepts applies (epochs, batch, lr, optimizer, seed, threads, checkpoints, --resume). The output records the teachers and the student by content digest in its provenance.

            Examples:
              kdtool distill teacher.kdb student.kdb --data data/mnist -o distilled.kdb
              kdtool distill t1.kdb t2.kdb student.kdb --data digits.csv.gz -T 20 --alpha 0.9 -o out.kdb
              kdtool distill teacher.kdb student.kdb --data unlabeled/ --no-labels --split all -o out.kdb
              kdtool distill peer1.kdb peer2.kdb peer3.kdb --method dml --data data/mnist -o dml-out/
              kdtool distill teacher.kdb student.kdb --method fsp --stage1-epochs 3 --data data/mnist -o fsp.kdb
              kdtool distill spec-a.kdb spec-b.kdb spec-c.kdb student.kdb --method kc --verticals v.json --top-k 2 --head fc-sc --self-paced vertical --data data/mnist -o kc.kdb
              kdtool distill generalist.kdb --method specialist --verticals v.json --data data/mnist -o specialists/
              mpirun -np 4 kdtool distill teacher.kdb student.kdb --data data/mnist --threads 1 -o distilled.kdb
            """,
        aliases: ["distil"])

    enum Method: String, ExpressibleByArgument, CaseIterable { case kd, fitnets, fsp, dml, kc, specialist }
    enum Stage2Loss: String, ExpressibleByArgument, CaseIterable { case fitnets, hinton }

    @Argument(help: "Teacher bundle(s), then the student bundle.")
    var bundles: [String]

    @Option(help: "Distillation method.")
    var method: Method = .kd

    @Option(name: [.customShort("T"), .long], help: "Softmax temperature for the soft targets.")
    var temperature: Float = 4

    @Option(help: "Weight of the soft-target term (the hard-label term gets 1 − α).")
    var alpha: Float = 0.9

    @Flag(help: "Soft targets only (α = 1), for unlabelled transfer data.")
    var noLabels = false

    @Option(
        help:
            "kd: folder for teacher logits kept between runs (un-augmented data only; default $XDG_CACHE_HOME/kdtool/teachers or ~/.cache/kdtool/teachers)."
    )
    var teacherCacheDir: String?

    @Flag(help: "kd: do not read or write the on-disk teacher-logit cache.")
    var noTeacherCache = false

    var teacherCache: String? { noTeacherCache ? nil : (teacherCacheDir ?? TeacherLogitStore.defaultDirectory()) }

    @Option(help: "fitnets: the teacher's hint layer (default: the first of its HINT candidates).")
    var hint: String?

    @Option(help: "fitnets: the student's guided layer (default: the first of its guided candidates).")
    var guided: String?

    @Option(help: "fitnets: epochs of stage 1 (hint training; default: --epochs).")
    var stage1Epochs: Int?

    @Option(help: "fitnets: epochs of stage 2 (default: --epochs).")
    var stage2Epochs: Int?

    @Option(help: "fitnets: stage-2 loss, fitnets (CE + λ·CE(P_T^τ, P_S^τ), λ 4 → 1) or hinton (the kd loss).")
    var stage2Loss: Stage2Loss = .fitnets

    @Option(help: "fitnets: temperature τ of the stage-2 soft targets.")
    var tau: Float = 3

    @Flag(help: "fitnets: keep the stage-1 regressor in the output bundle (HINT lists it).")
    var keepRegressor = false

    @Option(help: "fsp: the student's FSP pairs FIRST:SECOND,… (default: its FSPP section).")
    var fspPairs: String?

    @Option(help: "fsp: the teacher's FSP pairs FIRST:SECOND,… (default: --fsp-pairs when the teacher has those layers, else its FSPP).")
    var teacherFspPairs: String?

    @Option(help: "fsp: permute the teacher's FSP matrices by a seeded channel permutation (students of one teacher decorrelate).")
    var shuffleFsp: UInt64?

    @Option(help: "fsp: learning rate of stage 1 (the paper: 0.001).")
    var stage1Lr: Float = 0.001

    @Option(help: "fitnets, fsp: optimizer of stage 1 (default: --optimizer).")
    var stage1Optimizer: Optimizer.Kind?

    @Flag(help: "fitnets, fsp: keep OUTPUT.stage1.kdb after stage 2 (to inspect what stage 1 did to the weights).")
    var keepStage1 = false

    @Flag(
        help:
            "fsp: before stage 2, rescale every convolution that feeds a batch norm back to its initial weight norm and reset the batch-norm statistics (the output is unchanged under batch norm; the effective learning rate is restored)."
    )
    var fspRescale = false

    @Option(
        help:
            "kc: verticals JSON (from `kdtool verticals`, or {\"verticals\": [{\"name\", \"labels\": [...]}]}); default: the student's or teachers' VMAP."
    )
    var verticals: String?

    @Option(help: "kc: keep only the owning teacher's top-K probabilities in its vertical (capped at the vertical's size).")
    var topK: Int = 100

    @Option(help: "kc: student head fc | fc-sc | sc-sc | fc-sc-shared (replaces the student's output layer) or keep.")
    var head: KC.Head = .fc

    @Option(help: "kc: hidden units per vertical in the head.")
    var headWidth: Int = 64

    @Option(help: "kc: hidden layers in the head (ours: 1; the paper's: 2).")
    var headLayers: Int = 1

    @Option(help: "kc: with sc-sc, what each block of the first layer reads: split (its 1/M of the bottleneck) or all (the paper's).")
    var scInput: KC.SCInput = .split

    @Flag(
        help:
            "kc: the baseline — the same student and head trained without teachers, on the labels with the same sigmoid loss (no teacher bundles needed)."
    )
    var labelsOnly = false

    @Option(help: "kc: with fc-sc-shared, how many of each block's --head-width units are shared by all verticals.")
    var sharedWidth: Int = 16

    @Option(
        help: """
            kc: self-paced scaling y_i = γ·x_i/‖x_v‖, the norm over vertical v's logits (our choice: per vertical, \
            the paper's summaries leave it open), γ learnt per vertical or per class, initialised to √N_v; off disables it.
            """)
    var selfPaced: KC.SelfPaced = .off

    @Option(
        help:
            "kc: ε of the self-paced scaling, y = γ·x/max(‖x_v‖, ε). Small ε (the default 1e-6) divides by whatever norm the logits have, so while they are small a step is amplified; ε = 1 leaves verticals with ‖x_v‖ < 1 unscaled."
    )
    var selfPacedEpsilon: Double = 1e-6

    @Flag(help: "dml: update all peers from one forward pass instead of in turn.")
    var simultaneous = false

    @Flag(help: "dml: DML_e, each peer's target is the mean of the other peers' distributions.")
    var dmlEnsemble = false

    @OptionGroup var data: DataOptions
    @OptionGroup var training: TrainingOptions
    @OptionGroup var io: RunOptions

    func validate() throws {
        guard bundles.count >= 2 || method == .specialist || (method == .kc && labelsOnly) else {
            throw ValidationError("give at least one teacher and the student")
        }
        guard temperature > 0 else { throw ValidationError("--temperature must be positive") }
        guard (0...1).contains(alpha) else { throw ValidationError("--alpha must be within 0…1") }
    }

    func run() throws {
        if let seeds = io.seeds { return try SeedSweep.run(seeds: seeds, baseline: io.baseline, output: io.output) }
        if method == .dml { return try runMutual() }
        if method == .fitnets { return try runFitNets() }
        if method == .fsp { return try runFSP() }
        if method == .kc { return try runKC() }
        if method == .specialist { return try runSpecialists() }
        let loaded = try loadBundles()
        let teachers = loaded.dropLast()
        let (studentPath, student, studentDigest) = loaded.last!
        try reportingErrors {
            try Compatibility.check(teachers: teachers.map { ($0.0, $0.1) }, student: (studentPath, student))
        }
        var kd = KDConfig()
        kd.temperature = temperature
        kd.alpha = alpha
        kd.useLabels = !noLabels
        var job = TrainingRun(
            modelPath: studentPath, model: student, data: data, training: training, split: io.split, evalSplit: io.evalSplit,
            quiet: io.quiet,
            output: io.output, method: method.rawValue)
        job.parents = teachers.map { .init(role: "teacher", digest: $0.2) } + [.init(role: "student", digest: studentDigest)]
        job.extraHyperparameters = kd.hyperparameters
        job.needsLabels = kd.useLabels
        job.methodSettings = kd.hyperparameters.merging(["teachers": .array(teachers.map { .string($0.2) })]) { a, _ in a }
        var outputs: TeacherOutputs?
        let prep =
            student.preprocessing
            ?? Preprocessing(channels: student.inputShape[1], height: student.inputShape[2], width: student.inputShape[3])
        try job.execute { trainer, trainSet, augmentation in
            let disk = teacherCache.map { dir -> (store: TeacherLogitStore, key: String, count: Int) in
                let n = prep.normalization
                let key = TeacherLogitStore.key(
                    teachers: teachers.map(\.2), data: trainSet.digest, count: trainSet.count, classes: student.classCount,
                    normalization: "\(n.scale) \(n.mean) \(n.std)")
                return (TeacherLogitStore(directory: dir), key, trainSet.count)
            }
            let t = try TeacherOutputs(teachers: teachers.map(\.1), cacheAcrossEpochs: augmentation.isNone, disk: disk)
            if let set = trainer.transferSet { try t.precompute(set, world: trainer.world) }
            outputs = t
            trainer.distill(from: t, kd)
        }
        if let o = outputs, !io.quiet {
            warn(
                "teacher outputs: \(o.computed) computed, \(o.reused) reused from the cache\(o.loadedFromDisk > 0 ? " (\(o.loadedFromDisk) loaded from the on-disk cache)" : o.savedToDisk ? ", saved to the on-disk cache" : "")"
            )
        }
    }
}

extension DistillCommand {
    /// Every positional bundle: its path, model and content digest (for provenance).
    func loadBundles() throws -> [(String, Model, String)] {
        try bundles.map { path in
            let (m, b) = try loadModel(path)
            return (path, m, try withBundleErrors { try b.contentDigest() })
        }
    }

    /// FitNets: stage 1 (hints) writes OUT.stage1.kdb; stage 2 distils into OUT. A resumed run that
    /// finds the stage-1 bundle goes straight to stage 2.
    func runFitNets() throws {
        guard bundles.count == 2 else { throw ValidationError("fitnets takes one teacher and the student") }
        let (teacher, tb) = try loadModel(bundles[0])
        let (student, sb) = try loadModel(bundles[1])
        let teacherDigest = try withBundleErrors { try tb.contentDigest() }
        let studentDigest = try withBundleErrors { try sb.contentDigest() }
        try reportingErrors { try Compatibility.check(teachers: [(bundles[0], teacher)], student: (bundles[1], student)) }
        guard let hintNode = hint ?? teacher.hints?.hints.first else {
            throw ValidationError("the teacher declares no hint layer; name one with --hint")
        }
        guard let guidedNode = guided ?? student.hints?.guided.first else {
            throw ValidationError("the student declares no guided layer; name one with --guided")
        }
        let (hintShape, guidedShape) = try reportingErrors {
            (try FitNets.outputShape(teacher, node: hintNode), try FitNets.outputShape(student, node: guidedNode))
        }
        let regressor = try reportingErrors {
            try FitNets.makeRegressor(guided: guidedShape, hint: hintShape, guidedName: guidedNode, hintName: hintNode, seed: training.seed)
        }
        let settings: [String: Value] = [
            "hint": .string(hintNode), "guided": .string(guidedNode), "tau": .float(decimal(tau)),
            "stage2_loss": .string(stage2Loss.rawValue),
            "teacher": .string(teacherDigest),
        ]
        var kd = KDConfig()
        kd.temperature = temperature
        kd.alpha = alpha
        if !io.quiet {
            warn("FitNets stage 1: hint \(hintNode) \(hintShape) ← guided \(guidedNode) \(guidedShape) through the regressor")
        }
        let keep = keepRegressor
        try runTwoStages(
            student: student, parents: [.init(role: "teacher", digest: teacherDigest), .init(role: "student", digest: studentDigest)],
            stage1: ("fitnets-hint", settings, nil),
            prepare: { model in
                model.parameters[FitNets.regressorWeight] = regressor.weight
                model.parameters[FitNets.regressorBias] = regressor.bias
            },
            configure1: { trainer, _ in try trainer.hintTraining(teacher: teacher, hintNode: hintNode, guidedNode: guidedNode) },
            between: { model in
                if !keep {
                    model.parameters[FitNets.regressorWeight] = nil
                    model.parameters[FitNets.regressorBias] = nil
                }
                model.hints = Hints(
                    hints: model.hints?.hints ?? [], guided: [guidedNode],
                    regressor: keep ? [FitNets.regressorWeight, FitNets.regressorBias] : [])
                if !io.quiet {
                    warn("FitNets stage 2: \(stage2Loss == .fitnets ? "CE + λ·CE(P_T^τ, P_S^τ), λ 4 → 1, τ = \(tau)" : "Hinton KD")")
                }
            },
            stage2: ("fitnets", settings.merging(stage2Loss == .hinton ? kd.hyperparameters : [:]) { a, _ in a }),
            configure2: { trainer, augmentation in
                let t = try TeacherOutputs(teachers: [teacher], cacheAcrossEpochs: augmentation.isNone)
                if let set = trainer.transferSet { try t.precompute(set, world: trainer.world) }
                if stage2Loss == .hinton { trainer.distill(from: t, kd) } else { trainer.fitnetsKD(from: t, tau: tau) }
            })
    }

    /// A two-stage method: stage 1 writes OUT.stage1.kdb, stage 2 trains from it into OUT. A
    /// resumed run that finds the stage-1 bundle goes straight to stage 2.
    func runTwoStages(
        student: Model, parents: [Provenance.Parent], stage1: (method: String, settings: [String: Value], lr: Float?),
        prepare: (Model) -> Void, configure1: @escaping (Trainer, Augmentation) throws -> Void, between: (Model) -> Void,
        stage2: (method: String, settings: [String: Value]), configure2: @escaping (Trainer, Augmentation) throws -> Void
    ) throws {
        let stage1Output = Companion.stem(io.output) + ".stage1.kdb"
        let epochs1 = stage1Epochs ?? training.epochs
        guard epochs1 >= 0, (stage2Epochs ?? training.epochs) > 0 else {
            throw ValidationError("--stage1-epochs must be ≥ 0 (0: no stage 1) and --stage2-epochs positive")
        }
        let skipped = try TwoStageSchedule.run(
            student: student, stage1Output: stage1Output, resume: training.resume, stage1Epochs: epochs1, keepStage1: keepStage1,
            load: { try loadModel($0).0 },
            stage1: { model in
                prepare(model)
                var t1 = training
                t1.epochs = epochs1
                if let lr = stage1.lr { t1.lr = lr }
                if let o = stage1Optimizer { t1.optimizer = o }
                t1.keep = .last  // stage-1 accuracy says nothing (its loss trains no classifier); select in stage 2
                var job = TrainingRun(
                    modelPath: bundles.last!, model: model, data: data, training: t1, split: io.split, evalSplit: nil,
                    quiet: io.quiet, output: stage1Output, method: stage1.method)
                job.parents = parents
                job.metricsFor = io.output
                job.extraHyperparameters = stage1.settings
                job.methodSettings = stage1.settings
                try job.execute { trainer, _, augmentation in try configure1(trainer, augmentation) }
            },
            between: between,
            stage2: { model in
                var t2 = training
                t2.epochs = stage2Epochs ?? training.epochs
                var job = TrainingRun(
                    modelPath: bundles.last!, model: model, data: data, training: t2, split: io.split, evalSplit: io.evalSplit,
                    quiet: io.quiet, output: io.output, method: stage2.method)
                job.parents = parents
                job.extraHyperparameters = stage2.settings
                job.methodSettings = stage2.settings
                try job.execute { trainer, _, augmentation in try configure2(trainer, augmentation) }
            })
        if skipped && !io.quiet { warn("stage 1 was already done: continued from \(stage1Output)") }
    }

    /// Deep Mutual Learning: every bundle is a peer; -o is a folder receiving one bundle per peer.
    func runMutual() throws {
        guard training.keep == .last else {
            throw ValidationError("--keep best is not available with --method dml yet; every peer is written after the last epoch")
        }
        Interruption.install()
        let loaded = try loadBundles()
        try reportingErrors {
            try Compatibility.check(teachers: loaded.dropFirst().map { ($0.0, $0.1) }, student: (loaded[0].0, loaded[0].1))
        }
        let dir = io.output.hasSuffix(".kdb") ? String(io.output.dropLast(4)) : io.output
        let world = Cluster.world
        world.timeout = training.rankTimeout
        // Rank 0 alone writes the peers, checkpoints and metrics (and holds the lock); every rank trains.
        let lock = world.isRoot ? try preflight(output: dir, isFolder: true) : nil
        defer { withExtendedLifetime(lock) {} }
        if world.isRoot {
            mkdir(dir, 0o755)
            guard ImageFolder.isDirectory(dir) else { throw ValidationError("cannot create the output folder \(dir)") }
        }
        let first = loaded[0].1
        let prep =
            first.preprocessing ?? Preprocessing(channels: first.inputShape[1], height: first.inputShape[2], width: first.inputShape[3])
        let (trainSet, evalSet) = try reportingErrors { () throws -> (Dataset, Dataset?) in
            (
                try data.load(io.split, shape: prep.shape, prep: prep),
                try io.evalSplit.map { try data.load($0, shape: prep.shape, prep: prep) }
            )
        }
        var dml = DMLConfig()
        dml.simultaneous = simultaneous
        dml.ensemble = dmlEnsemble
        var config = training.config
        config.methodSettings = dml.hyperparameters.merging(["peers": .array(loaded.map { .string($0.2) })]) { a, _ in a }
        let k = loaded.count
        // The run itself is KDDistill's MutualLearningJob; here: progress, the metrics log, the peers' files.
        var job = MutualLearningJob(peers: loaded.map(\.1), train: trainSet, config: config, dml: dml, normalization: prep.normalization)
        job.eval = evalSet
        job.augmentation = training.augmentation(for: trainSet)
        job.checkpointPaths = (1...k).map { "\(dir)/peer\($0).ckpt.kdb" }
        // A metrics line that cannot be written stops the run at the next step (exit 5).
        let logFailure = FailureBox()
        job.shouldStop = { Interruption.isRequested || logFailure.error != nil }
        let progress = ProgressLine()
        progress.quiet = io.quiet
        job.onProgress = { epoch, batch, batches in
            progress.update(
                "epoch \(epoch)/\(config.epochs)  batch \(batch)/\(batches)",
                fraction: (Double(epoch - 1) + Double(batch) / Double(batches)) / Double(config.epochs))
        }
        job.onEpoch = { epoch, metrics in
            for m in metrics where logFailure.error == nil && world.isRoot {
                do { try MetricsLog.append("\(dir)/metrics.jsonl", m.json) } catch { logFailure.error = error }
            }
            let accs = metrics.map { m in
                m.evalAccuracy.map { Text.fixed(100 * $0, 2) + "%" } ?? Text.fixed(100 * m.trainAccuracy, 2) + "% (train)"
            }
            progress.finish(
                "epoch \(epoch)/\(config.epochs): " + accs.enumerated().map { "peer\($0.offset + 1) \($0.element)" }.joined(separator: ", ")
            )
        }
        if !io.quiet { warn("deep mutual learning: \(k) peers on \(trainSet.count) images from \(data.data), \(config.epochs) epochs") }
        var outcome: MutualLearningJob.Result?
        do {
            try runInterruptibly(progress: progress, quiet: io.quiet) {
                let r = try job.run(resume: training.resume)
                outcome = r
                return r.resumedAt
            }
        } catch {
            if let e = logFailure.error { try reportingErrors { throw e } }
            throw error
        }
        guard let result = outcome, world.isRoot else { return }
        for (i, (path, model, digest)) in loaded.enumerated() {
            let metrics = result.metrics[i]
            var hp = config.hyperparameters.merging(dml.hyperparameters) { _, b in b }
            hp["peers"] = .uint(UInt64(k))
            if world.isDistributed { hp["ranks"] = .uint(UInt64(world.size)) }
            if !Invocation.arguments.isEmpty { hp["argv"] = .array(Invocation.arguments.map { .string($0) }) }
            if !KernelPolicy.changes.isEmpty { hp["kernels"] = .array(KernelPolicy.changes.map { .string($0) }) }
            model.provenance = Provenance(
                method: dmlEnsemble ? "dml-e" : "dml",
                parents: [.init(role: "init", digest: digest)]
                    + loaded.enumerated().filter { $0.offset != i }.map { .init(role: "peer", digest: $0.element.2) },
                hyperparameters: hp,
                data: ["source": .string(data.data), "split": .string(io.split.rawValue), "count": .uint(UInt64(trainSet.count))],
                seed: Int64(bitPattern: config.seed), metrics: metrics)
            model.preprocessing = prep
            let out = "\(dir)/peer\(i + 1).kdb"
            let written = try withBundleErrors { try BundleWriter.write(model.contents(), to: out) }
            let acc =
                result.history[i].last?.evalAccuracy.map { ", \(io.evalSplit?.rawValue ?? "eval") acc \(Text.fixed(100 * $0, 2))%" } ?? ""
            print("\(out) (from \(path))\(acc), content digest \(written.contentDigest)")
        }
    }
}

#if canImport(Glibc)
    import Glibc
#endif

/// The first error a callback could not throw.
final class FailureBox {
    var error: Error?
}
