import ArgumentParser
import KDBundle
import KDData
import KDNN
import KDQuant
import KDTensor

extension QuantScheme: ExpressibleByArgument {}

struct QuantizeCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize-check",
        abstract: "Quantize a model, run it beside the fp32 original and report what quantization costs.",
        discussion: """
            Schemes: int8 (symmetric int8 weights, one scale per tensor), int8-per-channel (one scale per output \
            channel), fp16 (every float tensor as binary16). The int8 schemes also quantize the inputs of every \
            conv/linear layer to u8 with ranges calibrated on --calibration images of --calibration-split (min/max, \
            or the --percentile P and 100 − P percentiles). Weights are stored as i8 tensors with QNTP parameters and \
            activation ranges in META, so the written bundle really shrinks; eval and infer run it (weights \
            dequantized per layer, activations rounded to their u8 grid as ONNX QuantizeLinear/DequantizeLinear do).

            Reported per layer (worst activation SQNR first): weight SQNR, output SQNR against fp32, max/mean abs \
            error; per model: top-1 agreement, accuracy fp32 vs quantized and the drop, mean KL(fp32 ‖ quantized), \
            parameter bytes, file size before/after, and inference speed of both. \
            Exit code 4 when the accuracy drop exceeds --max-drop points (a pipeline gate).

            Examples:
              kdtool quantize-check student.kdb --data data/mnist -o student-int8.kdb
              kdtool quantize-check student.kdb --data data/mnist --scheme fp16 --json
              kdtool quantize-check student.kdb --data data/mnist --scheme int8 --percentile 99.99 --max-drop 0.5
            """)

    @Argument(help: "The fp32 model bundle.")
    var model: String

    @OptionGroup var data: DataOptions

    @Option(help: "Split the comparison runs on.")
    var split: Split = .eval

    @Option(help: "int8 | int8-per-channel | fp16")
    var scheme: QuantScheme = .int8PerChannel

    @Option(help: "Images used to calibrate activation ranges (int8 schemes).")
    var calibration: Int = 512

    @Option(help: "Split the calibration images come from.")
    var calibrationSplit: Split = .train

    @Option(help: "Clip activation ranges at this percentile (e.g. 99.99) instead of min/max.")
    var percentile: Double?

    @Option(help: "Largest accepted accuracy drop in percentage points; above it the exit code is 4.")
    var maxDrop: Double = 1.0

    @Option(name: .shortAndLong, help: "Write the quantized bundle here.")
    var output: String?

    @Option(help: "Batch size.")
    var batch: Int = 256

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Flag(help: "Print one JSON document.")
    var json = false

    func validate() throws {
        guard calibration > 0 else { throw ValidationError("--calibration must be at least 1") }
        if let p = percentile, !(p > 50 && p <= 100) { throw ValidationError("--percentile must be in (50, 100]") }
        guard maxDrop >= 0 else { throw ValidationError("--max-drop must be ≥ 0") }
    }

    func run() throws {
        Parallel.configure(threads: threads)
        let (model, bundle) = try loadModel(self.model)
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        let evalSet = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        try reportingErrors { try checkCompatible(model, evalSet) }
        let calSet =
            scheme.quantizesActivations ? try reportingErrors { try data.load(calibrationSplit, shape: prep.shape, prep: prep) } : nil
        let progress = ProgressLine()
        let settings = QuantizeCheck.Settings(scheme: scheme, calibrationImages: calibration, percentile: percentile, batchSize: batch)
        let result = try reportingErrors {
            try QuantizeCheck.run(
                model, bundle: bundle, comparison: evalSet, calibration: calSet, normalization: prep.normalization, settings: settings
            ) { phase, done, total in
                progress.update("\(phase) \(done)/\(total) images", fraction: Double(done) / Double(max(total, 1)))
            }
        }
        progress.finish("compared \(result.report.count) images")
        if !result.keptFloat32.isEmpty {
            warn(
                "kdtool: warning: \(result.keptFloat32.count) tensors stay f32 (values beyond fp16's ±65504): \(result.keptFloat32.prefix(6).joined(separator: ", "))\(result.keptFloat32.count > 6 ? ", …" : "")"
            )
        }
        var q = result
        let report = result.report
        let calibrated = result.calibrated

        // 4. Provenance, and the file.
        let parent = try withBundleErrors { try bundle.contentDigest() }
        var hp: [String: Value] = ["scheme": .string(scheme.rawValue)]
        if scheme.quantizesActivations {
            hp["calibration_images"] = .uint(UInt64(calibrated))
            hp["calibration_split"] = .string(calibrationSplit.rawValue)
            hp["activation_range"] = percentile.map { .float($0) } ?? .string("minmax")
        }
        q.contents.provenance = Provenance(
            method: "quantize", parents: [.init(role: "fp32", digest: parent)], hyperparameters: hp,
            data: ["source": .string(data.data), "split": .string(split.rawValue), "count": .uint(UInt64(report.count))],
            metrics: [
                "eval_accuracy": .float(report.accuracyQuantized), "fp32_accuracy": .float(report.accuracyFP32),
                "agreement": .float(report.agreement), "kl": .float(report.kl),
            ])
        var sizeAfter = try withBundleErrors { try BundleWriter.encode(q.contents).count }
        if let output {
            sizeAfter = try withBundleErrors { try BundleWriter.write(q.contents, to: output).size }
        }
        let summary = Summary(
            report: report, sizeBefore: bundle.fileSize, sizeAfter: sizeAfter, paramBytesBefore: result.parameterBytesFP32,
            paramBytesAfter: result.parameterBytesQuantized, speedFP32: result.speedFP32, speedQuantized: result.speedQuantized,
            calibrated: calibrated, keptF32: result.keptFloat32)
        if let output { try writeText(document(summary).render() + "\n", to: Companion.stem(output) + ".quantize-check.json") }
        if json { print(document(summary).render()) } else { printText(summary) }
        if report.accuracyDrop > maxDrop {
            warn(
                "kdtool: accuracy drop \(Text.fixed(report.accuracyDrop, 2)) points exceeds --max-drop \(Text.fixed(maxDrop, 2)) (\(scheme.rawValue))"
            )
            throw Exit.gateExceeded
        }
    }

    struct Summary {
        var report: QuantComparison.Report
        var sizeBefore: Int
        var sizeAfter: Int
        var paramBytesBefore: Int
        var paramBytesAfter: Int
        var speedFP32: Double
        var speedQuantized: Double
        var calibrated: Int
        var keptF32: [String]
    }

    func worstFirst(_ layers: [QuantComparison.Layer]) -> [QuantComparison.Layer] {
        layers.sorted { $0.activationSQNR < $1.activationSQNR }
    }

    func document(_ s: Summary) -> JSON {
        let keptF32 = s.keptF32
        let r = s.report
        func db(_ v: Double?) -> JSON { v.map { $0.isFinite ? .number($0) : .null } ?? .null }
        return .object([
            ("model", .string(model)), ("scheme", .string(scheme.rawValue)), ("data", .string(data.data)),
            ("split", .string(split.rawValue)), ("count", .int(r.count)), ("calibration_images", .int(s.calibrated)),
            ("accuracy_fp32", .number(r.accuracyFP32)), ("accuracy_quantized", .number(r.accuracyQuantized)),
            ("accuracy_drop_points", .number(r.accuracyDrop)), ("max_drop_points", .number(maxDrop)),
            ("passed", .bool(r.accuracyDrop <= maxDrop)), ("top1_agreement", .number(r.agreement)), ("kl", .number(r.kl)),
            ("parameter_bytes_fp32", .int(s.paramBytesBefore)), ("parameter_bytes_quantized", .int(s.paramBytesAfter)),
            ("file_bytes_fp32", .int(s.sizeBefore)), ("file_bytes_quantized", .int(s.sizeAfter)),
            ("file_size_ratio", .number(Double(s.sizeAfter) / Double(max(s.sizeBefore, 1)))),
            ("images_per_second_fp32", .number(s.speedFP32)), ("images_per_second_quantized", .number(s.speedQuantized)),
            ("output", output.map { .string($0) } ?? .null), ("kept_f32", .array(keptF32.map { .string($0) })),
            (
                "layers",
                .array(
                    worstFirst(r.layers).map { l in
                        .object([
                            ("node", .string(l.node)), ("op", .string(l.op)), ("weights", .array(l.weights.map { .string($0) })),
                            ("weight_sqnr_db", db(l.weightSQNR)), ("activation_sqnr_db", db(l.activationSQNR)),
                            ("max_abs_error", .number(l.maxAbsError)), ("mean_abs_error", .number(l.meanAbsError)),
                        ])
                    })
            ),
        ])
    }

    func printText(_ s: Summary) {
        let r = s.report
        func db(_ v: Double?) -> String {
            guard let v else { return "—" }
            return v.isFinite ? Text.fixed(v, 1) : (v > 0 ? "exact" : "-inf")
        }
        print("\(model) → \(scheme.rawValue) on \(data.data) [\(split.rawValue)], \(r.count) images")
        if s.calibrated > 0 {
            print(
                "  calibration      \(s.calibrated) images of [\(calibrationSplit.rawValue)], \(percentile.map { "percentile \($0)" } ?? "min/max")"
            )
        }
        print(
            "  accuracy         fp32 \(Text.fixed(100 * r.accuracyFP32, 2))%  quantized \(Text.fixed(100 * r.accuracyQuantized, 2))%  drop \(Text.fixed(r.accuracyDrop, 2)) points (max \(Text.fixed(maxDrop, 2)))"
        )
        print("  top-1 agreement  \(Text.fixed(100 * r.agreement, 2))%")
        print("  KL(fp32‖quant)   \(Text.number(r.kl)) nats/image")
        print(
            "  parameters       \(Text.bytes(s.paramBytesBefore)) → \(Text.bytes(s.paramBytesAfter)) (×\(Text.fixed(Double(s.paramBytesAfter) / Double(max(s.paramBytesBefore, 1)), 3)))"
        )
        print(
            "  file size        \(Text.bytes(s.sizeBefore)) → \(Text.bytes(s.sizeAfter)) (×\(Text.fixed(Double(s.sizeAfter) / Double(max(s.sizeBefore, 1)), 3)))\(output.map { "  written to \($0)" } ?? "")"
        )
        print(
            "  speed            fp32 \(Text.grouped(Int(s.speedFP32))) images/s, quantized \(Text.grouped(Int(s.speedQuantized))) images/s (×\(Text.fixed(s.speedQuantized / max(s.speedFP32, 1e-9), 2)); \(threads) threads)"
                + (s.speedQuantized < s.speedFP32
                    ? "\n                   the quantized model is slower: the file shrinks, but kdtool has no int8 kernels yet, so its layers run dequantized to fp32"
                    : "")
        )
        print("\nPer layer, worst output SQNR first")
        print(
            Text.table(
                ["layer", "op", "weight SQNR dB", "output SQNR dB", "max |err|", "mean |err|"],
                worstFirst(r.layers).map { l in
                    [l.node, l.op, db(l.weightSQNR), db(l.activationSQNR), Text.number(l.maxAbsError), Text.number(l.meanAbsError)]
                }, right: [2, 3, 4, 5]))
        print(r.accuracyDrop <= maxDrop ? "\nPASS: drop within --max-drop" : "\nFAIL: drop exceeds --max-drop (exit 4)")
    }
}
