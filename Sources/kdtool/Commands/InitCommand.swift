import ArgumentParser
import KDBundle
import KDData
import KDNN

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create an initialised, untrained model bundle from the architecture zoo.",
        discussion: """
            Architectures: mlp (--hidden), lenet5 (--width multiplier), resnet8|14|20|26|32|56 (CIFAR-style, --width base channels/16, --shortcut a|b), fitnet-thin (deep and thin, --width multiplier). Each records its FSP layer pairs and hint/guided candidates in the bundle.

            Mobile students, built as torchvision builds them (same parameter names, counts and FLOPs): mobilenetv2, mobilenetv3-small, mobilenetv3-large, efficientnet-b0 (--width as torchvision's width_mult, channels rounded to multiples of 8), efficientnet-lite0 (ReLU6, no squeeze-and-excitation), shufflenetv2 (--width 0.5, 1, 1.5 or 2), resnet18 (--width × 64 base channels). Inputs of at most 64 pixels a side get a CIFAR stem (stride 1, no max pool), larger ones ImageNet's; --stem overrides. --dropout sets their classifier's dropout (default 0.2).

            Examples:
              kdtool init --arch lenet5 --classes 10 --input 1x28x28 -o lenet5.kdb
              kdtool init --arch mobilenetv2 --width 0.5 --classes 10 --input 3x32x32 --seed 1 -o mbv2.kdb
              kdtool init --arch efficientnet-b0 --classes 1000 --input 3x224x224 -o b0.kdb
              kdtool init --arch resnet20 --classes 10 --input 3x32x32 --seed 1 -o r20.kdb
              kdtool init --arch mlp --hidden 64,64 --classes 10 --input 1x28x28 -o small.kdb
              kdtool init --arch resnet20 --data cifar-10-binary.tar.gz -o r20.kdb          (classes, names, input and normalisation from the data)
              kdtool init --arch resnet20 --data photos/ --input 3x64x64 --normalize imagenet --resize shorter-side-crop -o r20.kdb

            With --data, the class count and names come from the data (a folder's class folders, CIFAR's batches.meta.txt), \
            the input shape too (except for image folders, which take --input), and the normalisation defaults to the data's \
            own per-channel mean and std (--normalize data).
            """)

    @Option(help: "Architecture: \(Architecture.Kind.allCases.map(\.rawValue).joined(separator: "|")).")
    var arch: String

    @Option(help: "Number of output classes (default: the classes of --data).")
    var classes: Int?

    @Option(help: "Input shape C×H×W, e.g. 1x28x28 (default: the shape of --data's images).")
    var input: String?

    @Option(help: "Data the model is for: its classes, names, input shape and normalisation become the defaults.")
    var data: String?

    @Option(help: "Seed for the initial weights.")
    var seed: UInt64 = 0

    @Option(help: "Width multiplier (lenet5, fitnet-thin) or base width ÷ 16 (ResNets).")
    var width: Double = 1

    @Option(help: "Hidden layer sizes for mlp, comma-separated.")
    var hidden: String = "800,800"

    @Option(help: "ResNet shortcut when the shape changes: a (zero-padded identity) or b (1×1 conv + BN).")
    var shortcut: Architecture.Shortcut = .b

    @Option(help: "Dropout ratio after hidden layers (mlp), or before the classifier (mobile architectures; default 0.2).")
    var dropout: Double = 0

    @Option(help: "Stem of the mobile architectures and resnet18: cifar or imagenet (default: cifar up to 64 pixels a side).")
    var stem: Architecture.Stem?

    @Option(help: "Initialisation: torch (PyTorch defaults) or he (MSRA normal).")
    var initScheme: InitScheme = .torch

    @Option(help: "Class names, comma-separated (default 0…N−1).")
    var labels: String?

    @OptionGroup var prep: PreprocessingOptions

    @Option(name: .shortAndLong, help: "Output bundle.")
    var output: String

    func validate() throws {
        if let input { guard (try? parseShape(input)) != nil else { throw ValidationError("--input must look like 1x28x28") } }
        if let classes { guard classes > 0 else { throw ValidationError("--classes must be positive") } }
        guard data != nil || (classes != nil && input != nil) else {
            throw ValidationError("give --classes and --input, or --data to take them from the data")
        }
        guard width > 0 else { throw ValidationError("--width must be positive") }
    }

    func run() throws {
        var dataset: Dataset?
        if let data {
            let shape = try input.map(parseShape)
            if DataSource.isImageFolder(data) && shape == nil {
                throw ValidationError("\(data) is a folder of images: give --input C×H×W, the size they are brought to")
            }
            var o = DataSource.Options(split: .train, imageShape: shape)
            if let r = prep.resize { o.resize = r == .shorterSideCrop ? .shorterSideCrop : .stretch }
            if let a = prep.alpha { o.alpha = a == .black ? .black : a == .drop ? .drop : .white }
            o.invert = prep.invert
            dataset = try reportingErrors { try DataSource.load(data, o) }
        }
        let shape = try input.map(parseShape) ?? dataset!.shape
        if let d = dataset, d.shape != shape {
            throw ValidationError("--input \(shape) differs from the data's images \(d.shape)")
        }
        guard let classes = classes ?? dataset.map({ max($0.classes.count, ($0.labels.max() ?? -1) + 1) }), classes > 0 else {
            throw ValidationError("\(data ?? "the data") has no labelled classes: give --classes")
        }
        var a = try reportingErrors { try Architecture(name: arch) }
        a.width = width
        a.shortcut = shortcut
        a.dropout = dropout
        if a.kind.isMobile { a.stem = a.resolvedStem(input: shape) }
        a.hidden = try hidden.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: " ")), v > 0 else { throw ValidationError("--hidden takes positive integers") }
            return v
        }
        let model = try reportingErrors { try a.build(input: shape, classes: classes, seed: seed, initScheme: initScheme) }
        let fromData = dataset.flatMap { $0.classes.count == classes ? $0.classes : nil }
        let names = labels.map { $0.split(separator: ",").map { String($0) } } ?? fromData ?? (0..<classes).map(String.init)
        guard names.count == classes else { throw ValidationError("--labels lists \(names.count) names for \(classes) classes") }
        model.labels = Labels(names)
        var chosen = prep
        if dataset != nil && prep.normalize == nil && prep.mean == nil && prep.std == nil { chosen.normalize = .data }
        model.preprocessing = try chosen.preprocessing(shape: shape, data: dataset)
        model.provenance = Provenance(
            method: "init",
            hyperparameters: [
                "arch": .string(a.kind.rawValue), "summary": .string(a.summary), "width": .float(width),
                "stem": .string(a.kind.isMobile ? a.resolvedStem(input: shape).rawValue : "none"),
                "init": .string(initScheme.rawValue),
                "classes": .uint(UInt64(classes)), "input": .string(shape.map(String.init).joined(separator: "x")),
            ], data: data.map { ["source": .string($0)] } ?? [:], seed: Int64(bitPattern: seed))
        model.metadata["kdtool.arch"] = .string(a.kind.rawValue)
        let result = try withBundleErrors { try BundleWriter.write(model.contents(), to: output) }
        print("\(output): \(a.summary), \(Text.grouped(model.parameterCount)) parameters, input \(shape), \(classes) classes")
        if let d = dataset {
            print("classes from \(d.source): \(names.prefix(10).joined(separator: ", "))\(names.count > 10 ? ", …" : "")")
        }
        if let p = model.preprocessing, dataset != nil || prep.isSet { print(PreprocessingOptions.describe(p)) }
        print("content digest \(result.contentDigest)")
    }
}

func parseShape(_ s: String) throws -> [Int] {
    let parts = s.lowercased().split(separator: "x").map { Int($0) }
    guard parts.count == 3, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { throw ValidationError("shape '\(s)' is not C×H×W") }
    return parts.map { $0! }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
