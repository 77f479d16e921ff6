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
            The last bundle is the student (from `kdtool init`, or already trained); the ones before it are
            teachers. --method kd is Hinton et al.'s knowledge distillation:
              L = (1 − α)·CE(y, softmax(z_s)) + α·T²·KL(p_T ‖ softmax(z_s / T)),
            p_T the teacher's softmax at temperature T (with several teachers, the mean of theirs). The teachers run without autograd on the same (augmented) batch the student sees; without augmentation their outputs are computed once and reused every epoch. Everything `train` accepts applies (epochs, batch, lr, optimizer, seed, threads, checkpoints, --resume). The output records the teachers and the student by content digest in its provenance.

            Examples:
              kdtool distill teacher.kdb student.kdb --data ../shared/data/mnist -o distilled.kdb
              kdtool distill t1.kdb t2.kdb student.kdb --data digits.csv.gz -T 20 --alpha 0.9 -o out.kdb
              kdtool distill teacher.kdb student.kdb --data unlabeled/ --no-labels --split all -o out.kdb
            """)

    enum Method: String, ExpressibleByArgument, CaseIterable { case kd }

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

    @OptionGroup var data: DataOptions
    @OptionGroup var training: TrainingOptions
    @OptionGroup var io: RunOptions

    func validate() throws {
        guard bundles.count >= 2 else { throw ValidationError("give at least one teacher and the student") }
        guard temperature > 0 else { throw ValidationError("--temperature must be positive") }
        guard (0...1).contains(alpha) else { throw ValidationError("--alpha must be within 0…1") }
    }

    func run() throws {
        let loaded = try bundles.map { path -> (String, Model, String) in
            let (m, b) = try loadModel(path)
            return (path, m, try withBundleErrors { try b.contentDigest() })
        }
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
        job.methodSettings = kd.hyperparameters.merging(["teachers": .array(teachers.map { .string($0.2) })]) { a, _ in a }
        var outputs: TeacherOutputs?
        try job.execute { trainer, _, augmentation in
            let t = try TeacherOutputs(teachers: teachers.map(\.1), cacheAcrossEpochs: augmentation.isNone)
            outputs = t
            trainer.distill(from: t, kd)
        }
        if let o = outputs, !io.quiet {
            warn("teacher outputs: \(o.computed) computed, \(o.reused) reused from the cache")
        }
    }
}
