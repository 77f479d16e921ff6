import KDBundle
import KDData
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// The whole quantize-check pipeline as one call: calibrate activation ranges on the fp32 model
/// (int8 schemes), build the quantized bundle and read it back through the ordinary loader, run
/// both side by side on the comparison data, and time each alone. `kdtool quantize-check` parses
/// its options, calls `run`, records provenance and prints the result.
///
///     let r = try QuantizeCheck.run(model, bundle: b, comparison: evalSet, calibration: trainSet,
///                                   normalization: norm, settings: .init(scheme: .int8PerChannel))
///     print(r.report.accuracyDrop, r.speedQuantized / r.speedFP32)
public enum QuantizeCheck {
    public struct Settings: Sendable {
        public var scheme: QuantScheme
        /// Images used to calibrate activation ranges (int8 schemes).
        public var calibrationImages = 512
        /// Clip activation ranges at this percentile instead of min/max.
        public var percentile: Double?
        public var batchSize = 256
        public init(scheme: QuantScheme, calibrationImages: Int = 512, percentile: Double? = nil, batchSize: Int = 256) {
            self.scheme = scheme
            self.calibrationImages = calibrationImages
            self.percentile = percentile
            self.batchSize = batchSize
        }
    }

    public struct Result {
        /// The quantized bundle (provenance still to add), ready for `BundleWriter`.
        public var contents: BundleContents
        public var quantized: Model
        public var report: QuantComparison.Report
        public var calibrated: Int
        /// Tensors kept f32 (fp16 scheme: values beyond ±65504).
        public var keptFloat32: [String]
        public var parameterBytesFP32: Int
        public var parameterBytesQuantized: Int
        /// Images per second through the fused inference plan, one pass each.
        public var speedFP32: Double
        public var speedQuantized: Double
    }

    /// Progress: a phase ("calibrating", "comparing"), images done and the total.
    public typealias Progress = (_ phase: String, _ done: Int, _ total: Int) -> Void

    public static func run(
        _ model: Model, bundle: ModelBundle, comparison: Dataset, calibration: Dataset?, normalization: Normalization,
        settings: Settings, progress: Progress? = nil
    ) throws -> Result {
        guard model.activationQuant.isEmpty, !bundle.tensors.contains(where: { $0.dtype != .f32 }) else {
            throw NNError("\(bundle.path) is already quantized (non-f32 tensors); quantize-check starts from the fp32 model")
        }
        // 1. Calibration (int8 schemes): activation ranges from the fp32 model.
        var ranges: [String: ActivationQuant] = [:]
        var calibrated = 0
        if settings.scheme.quantizesActivations, let calibration {
            var cal = Calibrator(names: model.quantizableActivations, percentile: settings.percentile != nil)
            let batcher = Batcher(
                calibration, batchSize: min(settings.batchSize, 64), shuffle: true, normalization: normalization, seed: 0)
            for b in batcher.prefetching(epoch: 0) {
                let take = min(b.labels.count, settings.calibrationImages - cal.images)
                if take <= 0 { break }
                try cal.observe(model, batch: take == b.labels.count ? b.inputs : firstRows(b.inputs, take))
                progress?("calibrating", cal.images, settings.calibrationImages)
            }
            calibrated = cal.images
            ranges = cal.ranges(percentile: settings.percentile)
        }
        // 2. The quantized bundle, read back through the ordinary loader.
        let q = try QuantizedBundle(model: model, scheme: settings.scheme, activations: ranges)
        let encoded = try BundleWriter.encode(q.contents)
        let quantized = try Model(bundle: try ModelBundle(bytes: encoded, name: "<quantized>"))
        // 3. Side by side, then the speed of each alone.
        var cmp = QuantComparison(reference: model, quantized: quantized, weightSQNR: q.weightSQNR)
        let batcher = Batcher(comparison, batchSize: settings.batchSize, shuffle: false, normalization: normalization, seed: 0)
        var done = 0
        for b in batcher.prefetching(epoch: 0) {
            try cmp.add(b.inputs, labels: b.labels)
            done += b.labels.count
            progress?("comparing", done, comparison.count)
        }
        let paramBytesBefore = model.parameterCount * 4 + model.buffers.values.reduce(0) { $0 + $1.count * 4 }
        return Result(
            contents: q.contents, quantized: quantized, report: cmp.report, calibrated: calibrated, keptFloat32: q.keptFloat32,
            parameterBytesFP32: paramBytesBefore, parameterBytesQuantized: q.contents.tensors.reduce(0) { $0 + $1.bytes.count },
            speedFP32: try throughput(model, batcher), speedQuantized: try throughput(quantized, batcher))
    }

    /// Images per second through the inference path (fused plan), one pass over the batches.
    public static func throughput(_ model: Model, _ batcher: Batcher) throws -> Double {
        let plan = try InferencePlan(model)
        let batches = (0..<batcher.batchesPerEpoch).map { batcher.batch(epoch: 0, index: $0) }
        let started = seconds()
        var n = 0
        for b in batches {
            _ = try plan.run(b.inputs)
            n += b.labels.count
        }
        return Double(n) / max(seconds() - started, 1e-9)
    }

    static func firstRows(_ x: Tensor, _ n: Int) -> Tensor {
        let per = x.count / max(x.shape[0], 1)
        let out = Tensor(uninitialized: [n] + x.shape.dropFirst())
        out.pointer.update(from: x.pointer, count: n * per)
        return out
    }

    static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
