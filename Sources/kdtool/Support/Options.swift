import ArgumentParser
import KDBundle
import KDData
import KDIO
import KDNN
import KDTensor

/// Where the data comes from (shared by train, eval and the methods).
struct DataOptions: ParsableArguments {
    @Option(help: "Data: an MNIST IDX folder, a .csv[.gz] (8×8 digits), a CIFAR .tar.gz, or a folder of class folders.")
    var data: String

    @Option(help: "Fraction held out for eval from sources without their own split.")
    var holdout: Double = 0.2

    @Option(help: "Seed of the held-out split (keep it fixed across train and eval).")
    var holdoutSeed: UInt64 = 0

    func validate() throws {
        guard holdout > 0, holdout < 1 else {
            throw ValidationError("--holdout must be in (0, 1); to use every image of the data, give --split all")
        }
    }

    func load(_ split: Split, shape: [Int]?, prep: Preprocessing? = nil) throws -> Dataset {
        var o = DataSource.Options(split: split, holdout: holdout, seed: holdoutSeed, imageShape: shape)
        if let prep {
            o.alpha = prep.alpha == .black ? .black : prep.alpha == .drop ? .drop : .white
            o.resize = prep.resize == .shorterSideCrop ? .shorterSideCrop : .stretch
            o.invert = prep.invert
        }
        return try DataSource.load(data, o)
    }
}

/// Everything `train` accepts (also accepted by `distill`).
struct TrainingOptions: ParsableArguments {
    @Option(help: "Passes over the training data.")
    var epochs: Int = 10

    @Option(help: "Mini-batch size.")
    var batch: Int = 128

    @Option(help: "Peak learning rate.")
    var lr: Float = 0.05

    @Option(help: "sgd | adam | adamw")
    var optimizer: Optimizer.Kind = .sgd

    @Option(help: "SGD momentum.")
    var momentum: Float = 0.9

    @Flag(help: "Nesterov momentum.")
    var nesterov = false

    @Option(help: "Weight decay (L2 for sgd/adam, decoupled for adamw), on every parameter.")
    var weightDecay: Float = 5e-4

    @Option(help: "Learning-rate schedule per step: cosine (to 0) | step | constant.")
    var schedule: Schedule.Kind = .cosine

    @Option(help: "Linear warm-up steps.")
    var warmup: Int = 0

    @Option(help: "For --schedule step: decay ×0.1 every this many steps.")
    var stepEvery: Int = 0

    @Option(help: "Augmentation: auto (pad-crop; plus flips for colour images) | none | crop | crop-flip.")
    var augment: AugmentChoice = .auto

    @Option(help: "Padding for random crops (auto: 2 for gray images ≥ 16 px, 1 below, 4 for colour).")
    var pad: Int?

    @Option(help: "Seed for initial order, augmentation and dropout.")
    var seed: UInt64 = 0

    @Option(help: "Worker threads for the kernels.")
    var threads: Int = 2

    @Option(help: "Checkpoint every this many steps (0: at the end of every epoch only).")
    var checkpointEvery: Int = 0

    @Flag(help: "Continue from the checkpoint next to the output, if one exists.")
    var resume = false

    @Option(help: "Also log the loss of the first N steps of each stage to OUTPUT.steps.jsonl (and .csv).")
    var logSteps: Int = 0

    @Option(help: .hidden)  // tests: stop (SIGSTOP) after the N-th checkpoint, to kill at a known boundary
    var debugStopAtCheckpoint: Int = 0

    @Option(help: "Which weights to write: last (after the final epoch) or best (highest accuracy on the validation subset).")
    var keep: KeepChoice = .last

    @Option(help: "With --keep best: seeded fraction of the training split held out for validation (never the eval split).")
    var valFraction: Double = 0.1

    @Option(help: "With --keep best: stop when validation accuracy has not improved for this many epochs (0: never).")
    var patience: Int = 0

    @Flag(help: "Under mpirun: batch-norm statistics over the whole global batch rather than each rank's share.")
    var syncBatchnorm = false

    @Option(help: "Under mpirun: seconds a rank waits for another before it stops the job and names the silent rank.")
    var rankTimeout: Double = 600

    @Option(
        help:
            "Under mpirun: sum gradients in buckets of this many KiB while backward runs (0: one sum after backward; default: 256 when the ranks span machines, 0 on one machine)."
    )
    var bucketKb: Int?

    func validate() throws {
        guard epochs > 0, batch > 0, lr > 0, threads > 0 else {
            throw ValidationError("--epochs, --batch, --lr and --threads must be positive")
        }
        guard (bucketKb ?? 0) >= 0 && (bucketKb ?? 0) <= 1 << 20 else { throw ValidationError("--bucket-kb must be within 0…1048576") }
        guard rankTimeout > 0 else { throw ValidationError("--rank-timeout must be a positive number of seconds") }
        guard patience >= 0 else { throw ValidationError("--patience must be 0 (off) or a number of epochs") }
        guard patience == 0 || keep == .best else {
            throw ValidationError("--patience stops on the validation split, which --keep best holds out: add --keep best")
        }
    }

    var config: TrainConfig {
        var c = TrainConfig()
        c.epochs = epochs
        c.batchSize = batch
        c.lr = lr
        c.optimizer = optimizer
        c.momentum = momentum
        c.nesterov = nesterov
        c.weightDecay = weightDecay
        c.schedule = schedule
        c.warmupSteps = warmup
        c.stepEvery = stepEvery
        c.seed = seed
        c.threads = threads
        c.checkpointEvery = checkpointEvery
        c.stopAtCheckpoint = debugStopAtCheckpoint
        c.patience = patience
        c.logSteps = max(0, logSteps)
        c.syncBatchNorm = syncBatchnorm
        c.gradientBucketBytes = bucketKb.map { $0 << 10 }
        return c
    }

    func augmentation(for d: Dataset) -> Augmentation {
        let colour = d.channels == 3
        let autoPad = colour ? 4 : (d.height >= 16 ? 2 : 1)
        switch augment {
        case .none: return .none
        case .crop: return Augmentation(padCrop: pad ?? autoPad)
        case .cropFlip: return Augmentation(padCrop: pad ?? autoPad, horizontalFlip: true)
        case .auto: return Augmentation(padCrop: pad ?? autoPad, horizontalFlip: colour)
        }
    }
}

/// Named normalisations for `--normalize`.
enum NormalizePreset: String, ExpressibleByArgument, CaseIterable {
    case imagenet, cifar10, mnist, data, none

    /// Mean and std per channel (torchvision's ImageNet figures, the CIFAR-10 and MNIST training sets').
    var values: (mean: [Float], std: [Float])? {
        switch self {
        case .imagenet: return ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        case .cifar10: return ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
        case .mnist: return ([0.1307], [0.3081])
        case .data, .none: return nil
        }
    }
}

extension Preprocessing.Resize: ExpressibleByArgument {}
extension Preprocessing.Alpha: ExpressibleByArgument {}

/// How image files become the network's input, recorded in the bundle's PREP (init, import, train).
/// Images are decoded to RGB (or gray for one-channel models) in that channel order; a pixel p
/// becomes ((invert ? 255 − p : p) × scale − mean) ÷ std per channel.
struct PreprocessingOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Normalisation preset: imagenet, cifar10, mnist, data (the per-channel mean and std of --data's training split) or none (mean 0, std 1).",
            discussion: "--mean/--std override the preset's values."))
    var normalize: NormalizePreset?

    @Option(help: "Per-channel mean for input normalisation (after scaling to [0, 1]), comma-separated.")
    var mean: String?

    @Option(help: "Per-channel std for input normalisation, comma-separated.")
    var std: String?

    @Option(
        help: "How image files are brought to the input size: stretch, or shorter-side-crop (resize the shorter side, crop the centre).")
    var resize: Preprocessing.Resize?

    @Option(help: "How transparent pixels are flattened: white, black (composited on that colour) or drop (ignore alpha).")
    var alpha: Preprocessing.Alpha?

    @Flag(help: "Image files are inverted before use (models trained on white-on-black digits such as MNIST).")
    var invert = false

    /// Whether any flag was given (train only replaces the bundle's PREP then).
    var isSet: Bool { normalize != nil || mean != nil || std != nil || resize != nil || alpha != nil || invert }

    /// PREP for an input of `shape` = [C, H, W]: the flags given, over `base` (the bundle's PREP,
    /// for train and import), with `data` for the `data` preset.
    func preprocessing(shape: [Int], base: Preprocessing? = nil, data: Dataset? = nil) throws -> Preprocessing {
        let c = shape[0]
        var p = base ?? Preprocessing(channels: c, height: shape[1], width: shape[2])
        if let normalize {
            if let v = normalize.values {
                guard v.mean.count == c else {
                    throw ValidationError(
                        "--normalize \(normalize.rawValue) is for \(v.mean.count)-channel images; the model has \(c) channels")
                }
                (p.mean, p.std) = v
            } else if normalize == .data {
                guard let data else { throw ValidationError("--normalize data needs --data (its training split's statistics)") }
                (p.mean, p.std) = Self.statistics(data, scale: p.scale)
            } else {
                (p.mean, p.std) = (Array(repeating: 0, count: c), Array(repeating: 1, count: c))
            }
        }
        func floats(_ s: String, _ flag: String) throws -> [Float] {
            let v = s.split(separator: ",").map { Float($0.trimmingCharacters(in: " ")) }
            guard v.count == c, v.allSatisfy({ $0 != nil && $0!.isFinite }) else {
                throw ValidationError("\(flag) needs \(c) comma-separated numbers (one per channel), not '\(s)'")
            }
            return v.map { $0! }
        }
        if let mean { p.mean = try floats(mean, "--mean") }
        if let std {
            p.std = try floats(std, "--std")
            guard p.std.allSatisfy({ $0 > 0 }) else { throw ValidationError("--std values must be positive") }
        }
        if let resize { p.resize = resize }
        if let alpha { p.alpha = alpha }
        if invert { p.invert = true }
        return p
    }

    /// Per-channel mean and std of a dataset's pixels after scaling (population std, at least 1e-3).
    static func statistics(_ d: Dataset, scale: Double) -> ([Float], [Float]) {
        let plane = d.height * d.width
        var mean: [Float] = []
        var std: [Float] = []
        for ch in 0..<d.channels {
            var s = 0.0
            var s2 = 0.0
            for i in 0..<d.count {
                let base = (i * d.channels + ch) * plane
                for k in base..<(base + plane) {
                    let v = Double(d.pixels[k]) * scale
                    s += v
                    s2 += v * v
                }
            }
            let n = Double(max(1, d.count * plane))
            let m = s / n
            mean.append(Float((m * 10_000).rounded() / 10_000))
            std.append(Float((max(1e-3, (max(0, s2 / n - m * m)).squareRoot()) * 10_000).rounded() / 10_000))
        }
        return (mean, std)
    }

    /// One line saying what PREP holds, for the commands' output.
    static func describe(_ p: Preprocessing) -> String {
        func list(_ v: [Float]) -> String { v.map { "\($0)" }.joined(separator: ",") }
        return "preprocessing: mean \(list(p.mean)), std \(list(p.std)), resize \(p.resize.rawValue), alpha \(p.alpha.rawValue)"
            + (p.invert ? ", inverted" : "")
    }
}

/// Where a training-like run reads and writes (shared by train and distill).
struct RunOptions: ParsableArguments {
    @Option(help: "Split to train on.")
    var split: Split = .train

    @Option(help: "Also evaluate on this split after every epoch and at the end (reporting only).")
    var evalSplit: Split?

    @Flag(help: "No progress output.")
    var quiet = false

    @Option(name: .shortAndLong, help: "Output bundle (with --seeds: a pattern, {seed} is replaced; else -s<seed> is added).")
    var output: String

    @Option(help: "Run once per seed (comma-separated, e.g. 0,1,2,3,4) and summarise eval accuracy as mean ± std.")
    var seeds: String?

    @Option(help: "With --seeds: bundles of baseline runs with the same seeds ({seed} pattern) for a paired difference.")
    var baseline: String?

    @Option(
        help:
            "A YAML file of flags (keys as flag names, `model`/`bundles` for the positional bundles, `sweep:` for combinations); flags given here override it."
    )
    var config: String?
}

enum KeepChoice: String, ExpressibleByArgument, CaseIterable { case last, best }

enum AugmentChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, none, crop
    case cropFlip = "crop-flip"
}

extension Optimizer.Kind: ExpressibleByArgument {}
extension Schedule.Kind: ExpressibleByArgument {}
extension Split: ExpressibleByArgument {}
extension InitScheme: ExpressibleByArgument {}
extension Architecture.Shortcut: ExpressibleByArgument {}
extension Architecture.Stem: ExpressibleByArgument {}

/// Normalisation from a bundle's preprocessing.
extension Preprocessing {
    var normalization: Normalization { Normalization(scale: Float(scale), mean: mean, std: std) }
}

/// Paths that travel with an output bundle.
enum Companion {
    static func stem(_ output: String) -> String { output.hasSuffix(".kdb") ? String(output.dropLast(4)) : output }
    static func checkpoint(_ output: String) -> String { stem(output) + ".ckpt.kdb" }
    static func metrics(_ output: String) -> String { stem(output) + ".metrics.jsonl" }
    static func best(_ output: String) -> String { stem(output) + ".best.kdb" }
    static func config(_ output: String) -> String { stem(output) + ".config.yaml" }
}

/// Loads a model bundle, turning any failure into exit 2 with one line.
func loadModel(_ path: String) throws -> (Model, ModelBundle) {
    let bundle = try withBundleErrors { try ModelBundle(path: path) }
    do {
        bundle.prefault()
        return (try Model(bundle: bundle), bundle)
    } catch let e as BundleError {
        warn("kdtool: error: \(e)")
        throw Exit.invalidInput
    } catch {
        warn("kdtool: error: \(PathCoding.display(path)): \(error)")
        throw Exit.invalidInput
    }
}
