import ArgumentParser
import KDBundle
import KDInterop
import KDNN
import KDTensor

/// Reports an interchange-file problem as one line with exit code 2 (5 for an output).
func withInteropErrors<T>(_ body: () throws -> T) throws -> T { try reportingErrors(body) }

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import an ONNX model, or a safetensors/npz state dict into a zoo architecture, as a model bundle.",
        discussion: """
            The format is read from the file's content, not its extension. \
            ONNX (opsets 9–22, both PyTorch exporters): Conv (grouped and depthwise too), Gemm, MatMul(+Add), \
            BatchNormalization, LayerNormalization, Relu, Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu, Tanh, Erf, Gelu, \
            Sqrt, Pow (2, 0.5), MaxPool, AveragePool, GlobalAveragePool, ReduceMean, Add/Sub/Mul/Div (NumPy broadcasting), \
            Sum, Concat, Split, Slice, Pad, Transpose, Flatten, Reshape, Dropout, Softmax and Identity map onto kdtool's \
            op set; GELU and SiLU written as primitive ops become one op; nodes computable at import (Constant, Shape, \
            Gather, Unsqueeze, Concat of constants, …) are folded; external-data tensors are read from the model's folder. Every unsupported node is \
            listed in one error. A trailing Softmax/Sigmoid becomes the bundle's output kind, so `kdtool run` writes logits \
            unless --probabilities is given (and `kdtool export` writes the activation again). An output of [N, K, 1, 1] (a \
            classifier ending in a 1×1 convolution, e.g. SqueezeNet) is flattened: the model has K classes. \
            safetensors/npz: a PyTorch state_dict loaded into --arch (init options as for `kdtool init`); names are matched \
            exactly, through --map (JSON: {"ours": "theirs", "prefix.": "their.prefix."}), or by torchvision-style ResNet \
            conventions (layer1.0.conv1 ↔ stage1.block1.conv1, downsample.0/1 ↔ shortcut.conv/bn, linear ↔ fc). All \
            mismatches are listed at once.

            Examples:
              kdtool import teacher.onnx -o teacher.kdb
              kdtool import resnet20.safetensors --arch resnet20 --classes 10 --input 3x32x32 -o r20.kdb
              kdtool import weights.npz --arch mlp --hidden 800,800 --classes 10 --input 1x28x28 --map names.json -o mlp.kdb
            """)

    @Argument(help: "MODEL.onnx, MODEL.safetensors or MODEL.npz.")
    var source: String

    @Option(help: "Zoo architecture for a state dict (as `kdtool init --arch`).")
    var arch: String?

    @Option(help: "Name map JSON for a state dict.")
    var map: String?

    @Option(help: "Class names: a file with one per line, or a comma-separated list.")
    var labels: String?

    @Option(help: "Input shape C×H×W (required with --arch; checked against an ONNX model's input).")
    var input: String?

    @Option(help: "Output classes for --arch (default: from --labels).")
    var classes: Int?

    @Option(help: "Width multiplier for --arch.")
    var width: Double = 1

    @Option(help: "Stem for --arch's mobile architectures and resnet18: cifar or imagenet (default: by the input size).")
    var stem: Architecture.Stem?

    @Option(help: "Hidden sizes for --arch mlp.")
    var hidden: String = "800,800"

    @OptionGroup var prep: PreprocessingOptions

    @Option(name: .shortAndLong, help: "Output bundle.")
    var output: String

    func run() throws {
        let bytes = try withInteropErrors { try readFileBytes(source) }
        let isONNX = !(bytes.starts(with: [0x50, 0x4b]) || looksLikeSafetensors(bytes))
        var names = try labels.map { try labelList($0) }
        let model: Model
        var hp: [String: Value] = [:]
        if isONNX && arch == nil {
            let (m, notes) = try withInteropErrors { try OnnxImporter.load(path: source) }
            model = m
            hp["format"] = .string("onnx")
            hp["opset"] = .uint(UInt64(notes.opset))
            hp["folded_nodes"] = .uint(UInt64(notes.folded))
            if !notes.producer.isEmpty { hp["producer"] = .string(notes.producer) }
            if let s = notes.strippedOutputActivation { hp["output_activation"] = .string(s) }
            if let input {
                let want = try parseShape(input)
                guard Array(model.inputShape.dropFirst()) == want else {
                    warn("kdtool: error: \(source): the model's input is \(Array(model.inputShape.dropFirst())), not \(want)")
                    throw ExitCode.failure
                }
            }
        } else {
            guard let arch, let input else {
                warn("kdtool: error: \(source) is a state dict (safetensors/npz): name the architecture with --arch and --input")
                throw ExitCode(64)
            }
            let shape = try parseShape(input)
            guard let k = classes ?? names?.count else { throw ValidationError("give --classes or --labels with --arch") }
            var a = try reportingErrors { try Architecture(name: arch) }
            a.width = width
            a.stem = stem
            a.hidden = hidden.split(separator: ",").compactMap { Int($0) }
            model = try reportingErrors { try a.build(input: shape, classes: k, seed: 0) }
            let dict = try withInteropErrors { try StateDict.read(path: source) }
            let nameMap = try withInteropErrors { try map.map { try NameMap(json: readFileBytes($0), path: $0) } ?? NameMap() }
            let unused = try withInteropErrors { try dict.load(into: model, map: nameMap) }
            if !unused.isEmpty {
                warn("kdtool: warning: \(unused.count) tensors of \(source) were not used: \(unused.prefix(8).joined(separator: ", "))")
            }
            hp["format"] = .string(bytes.starts(with: [0x50, 0x4b]) ? "npz" : "safetensors")
            hp["arch"] = .string(a.summary)
            model.metadata["kdtool.arch"] = .string(a.kind.rawValue)
        }
        let classCount = model.classCount
        if names == nil { names = model.labels?.classes }
        if let n = names, n.count != classCount {
            warn("kdtool: error: \(n.count) labels for a model with \(classCount) outputs")
            throw ExitCode.failure
        }
        model.labels = Labels(names ?? (0..<classCount).map(String.init))
        let shape = Array(model.inputShape.dropFirst())
        if shape.count == 3 {
            if model.preprocessing != nil && !prep.isSet {
                print("preprocessing from the file's kdtool.preprocessing metadata")
            } else {
                model.preprocessing = try prep.preprocessing(shape: shape, base: model.preprocessing)
                if !prep.isSet {
                    warn(
                        "kdtool: note: \(source) says nothing of its input normalisation: PREP is mean 0, std 1 on pixels scaled to [0, 1]; "
                            + "give --normalize imagenet (torchvision models), --mean/--std, or --resize to match how it was trained")
                }
            }
        }
        model.provenance = Provenance(method: "import", hyperparameters: hp, data: ["source": .string(source)])
        let result = try withBundleErrors { try BundleWriter.write(model.contents(), to: output) }
        print(
            "\(output): imported \(source) (\(hp["format"].map { if case .string(let s) = $0 { s } else { "" } } ?? "")), \(model.graph.nodes.count) nodes, \(Text.grouped(model.parameterCount)) parameters, input \(model.inputShape), \(classCount) outputs"
        )
        print("content digest \(result.contentDigest)")
    }

    func looksLikeSafetensors(_ b: [UInt8]) -> Bool {
        guard b.count > 9 else { return false }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(b[i]) << (8 * UInt64(i)) }
        return n > 0 && n < UInt64(b.count) && b[8] == UInt8(ascii: "{")
    }

    func labelList(_ s: String) throws -> [String] {
        if let bytes = try? readFileBytes(s) {
            return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
        }
        return s.split(separator: ",").map { String($0).trimmingSpaces }
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a model bundle as ONNX, or its weights as safetensors/npz (by the output's extension).",
        discussion: """
            ONNX (.onnx): every op kdtool runs, KC heads as kdtool-domain functions (Slice/Gemm/Concat, ReduceL2/Max/Div/Mul \
            bodies) and quantized bundles as DequantizeLinear weights plus QuantizeLinear/DequantizeLinear activation pairs; \
            the graph outputs logits (the output kind is recorded in metadata_props and restored by `kdtool import`), except \
            for a model imported from a graph that ended in Softmax/Sigmoid: that activation is written again, so the export \
            computes what the original did (--logits leaves it off). \
            The batch dimension is symbolic ("N") unless --fixed-batch. The bundle's preprocessing goes into metadata_props: \
            kdtool.preprocessing (JSON: layout, channel order, resize, alpha, invert, scale, mean, std) and kdtool.input (one \
            sentence); `kdtool import` restores it. With --include-preprocessing the graph itself starts with the \
            normalisation (input "pixels": float values 0…255, N×C×H×W), so a runtime can feed decoded, resized pixels. \
            safetensors (.safetensors) / npz (.npz): every tensor as float32, named as in the bundle, or through --map \
            (JSON {"ours": "theirs", "prefix.": "their.prefix."}) for a PyTorch state_dict.

            Examples:
              kdtool export student.kdb -o student.onnx
              kdtool export student.kdb -o student.onnx --opset 13 --fixed-batch
              kdtool export student.kdb -o student-pixels.onnx --include-preprocessing
              kdtool export student.kdb -o student.safetensors --map torch-names.json
            """)

    @Argument(help: "The model bundle.")
    var model: String

    @Option(name: .shortAndLong, help: "Output file: .onnx, .safetensors or .npz.")
    var output: String

    @Option(help: "ONNX opset (13…21).")
    var opset: Int = 17

    @Flag(help: "A batch of exactly 1 instead of the symbolic batch dimension.")
    var fixedBatch = false

    @Flag(help: .hidden)  // the default since 0.1; accepted for older scripts
    var dynamicBatch = false

    @Flag(help: "Start the graph with the bundle's normalisation: the input is pixel values 0…255.")
    var includePreprocessing = false

    @Flag(
        help:
            "Write logits even for a model imported from a graph that ended in Softmax/Sigmoid (by default such a model is exported with that activation again, so it computes what the original did)."
    )
    var logits = false

    @Option(help: "Name map JSON for safetensors/npz (ours → theirs).")
    var map: String?

    func run() throws {
        let (m, bundle) = try loadModel(model)
        let lower = output.lowercased()
        if lower.hasSuffix(".safetensors") || lower.hasSuffix(".npz") {
            let nameMap = try withInteropErrors { try map.map { try NameMap(json: readFileBytes($0), path: $0) } ?? NameMap() }
            let tensors = m.tensorNames.map { name -> (name: String, shape: [Int], values: [Float]) in
                let t = (m.parameters[name] ?? m.buffers[name])!
                return (nameMap.candidates(name).first ?? name, t.shape, Array(UnsafeBufferPointer(start: t.pointer, count: t.count)))
            }
            let bytes = lower.hasSuffix(".npz") ? StateDict.encodeNpz(tensors) : StateDict.encodeSafetensors(tensors)
            try withInteropErrors { try writeFileBytes(bytes, to: output) }
            print("\(output): \(tensors.count) tensors, \(Text.bytes(bytes.count))")
            return
        }
        guard lower.hasSuffix(".onnx") else {
            warn("kdtool: error: \(output): the extension must be .onnx, .safetensors or .npz")
            throw ExitCode(64)
        }
        let bytes = try withInteropErrors {
            try OnnxExporter.export(
                m, bundle: bundle,
                options: .init(
                    opset: opset, dynamicBatch: !fixedBatch, includePreprocessing: includePreprocessing,
                    outputActivation: !logits && m.metadata[OnnxExporter.outputActivationKey] != nil))
        }
        try withInteropErrors { try writeFileBytes(bytes, to: output) }
        print(
            "\(output): ONNX opset \(opset), \(m.graph.nodes.count) kdtool nodes, batch \(fixedBatch ? "1" : "N"), \(Text.bytes(bytes.count))"
        )
        if let p = m.preprocessing {
            let input = OnnxExporter.preprocessingProps(p, inGraph: includePreprocessing).first { $0.0 == "kdtool.input" }?.1 ?? ""
            print("input: \(input)")
        }
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a model's forward pass on an .npy tensor and write the result as .npy.",
        discussion: """
            The input is float32 N×C×H×W (or N×F for a flat input), any batch size. By default the graph output (logits) is \
            written; --probabilities applies the output kind (softmax/sigmoid); --output NAME writes any named value of the \
            graph instead (a node output, e.g. stage2.block1.relu2). \
            The input must already be what the network sees: pixels normalised as the bundle's PREP says (`kdtool inspect \
            model.kdb` prints it). With --pixels the input is raw pixel values 0…255 in the model's size and channel order, \
            and run applies PREP's invert, scale, mean and std first, as infer does for image files.

            Examples:
              kdtool run model.kdb --input x.npy -o y.npy
              kdtool run model.kdb --input raw-pixels.npy --pixels --probabilities -o p.npy
              kdtool run model.kdb --input x.npy --output pool1 -o features.npy
            """)

    @Argument(help: "The model bundle.")
    var model: String

    @Option(help: "Input tensor (.npy, float32).")
    var input: String

    @Option(help: "Name of the graph value to write (default: the graph output).")
    var output: String?

    @Flag(help: "Apply the output kind (softmax or sigmoid) to the graph output.")
    var probabilities = false

    @Option(name: .customShort("o"), help: "Output .npy file.")
    var out: String

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Flag(help: "The input is pixel values 0…255: apply the bundle's preprocessing (invert, scale, mean, std) first.")
    var pixels = false

    func run() throws {
        Parallel.configure(threads: threads)
        let (m, _) = try loadModel(model)
        let a = try withInteropErrors { try Npy.read(path: input) }
        let want = m.inputShape
        guard a.dtype == "<f4" else {
            warn("kdtool: error: \(input): dtype \(a.dtype); the model takes float32 ('<f4')")
            throw Exit.invalidInput
        }
        guard a.shape.count == want.count, Array(a.shape.dropFirst()) == Array(want.dropFirst()) else {
            warn("kdtool: error: \(input): shape \(a.shape) does not fit the model input \(want) (first dimension is the batch)")
            throw Exit.invalidInput
        }
        var values = a.floats
        if pixels {
            guard let p = m.preprocessing, a.shape.count == 4 else {
                warn("kdtool: error: --pixels needs an image model with preprocessing (PREP); \(model) has none")
                throw ExitCode.failure
            }
            let plane = a.shape[2] * a.shape[3]
            for i in values.indices {
                let c = (i / plane) % p.channels
                let v = p.invert ? 255 - values[i] : values[i]
                values[i] = (v * Float(p.scale) - p.mean[c]) / p.std[c]
            }
        }
        let x = Tensor(shape: a.shape, values: values)
        let y: Tensor
        if let name = output {
            var rng = RandomSource(seed: 0)
            let tape = Tape(recording: false)
            let f = try reportingErrors { try m.forward(x, training: false, tape: tape, rng: &rng) }
            guard let v = f.values[name], m.parameters[name] == nil else {
                let known = m.order.map { $0.outputs[0] }
                warn(
                    "kdtool: error: \(model) has no value '\(name)'; node outputs: \(known.prefix(12).joined(separator: ", "))\(known.count > 12 ? ", …" : "")"
                )
                throw ExitCode.failure
            }
            y = tape.value(v)
        } else {
            let plan = try reportingErrors { try InferencePlan(m) }
            y = try reportingErrors { probabilities ? try plan.probabilities(x) : try plan.run(x) }
        }
        try withInteropErrors { try Npy.write(out, shape: y.shape, floats: Array(UnsafeBufferPointer(start: y.pointer, count: y.count))) }
        print("\(out): \(y.shape) float32 from \(a.shape)")
    }
}
