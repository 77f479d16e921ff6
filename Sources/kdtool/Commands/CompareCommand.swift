import ArgumentParser
import KDBundle
import KDData
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Latency and throughput of a fused inference plan, measured on real inputs.
struct SpeedProbe {
    /// p50 and p99 of `runs` single passes over `x`, in milliseconds.
    static func latency(_ plan: InferencePlan, _ x: Tensor, runs: Int, warmup: Int = 3) throws -> (p50: Double, p99: Double) {
        let times = try samples(plan, x, runs: runs, warmup: warmup)
        return (quantile(times, 0.5), quantile(times, 0.99))
    }

    /// Milliseconds of each of `runs` passes over `x` (after `warmup` untimed ones).
    static func samples(_ plan: InferencePlan, _ x: Tensor, runs: Int, warmup: Int = 3) throws -> [Double] {
        for _ in 0..<warmup { _ = try plan.run(x) }
        var times: [Double] = []
        for _ in 0..<runs {
            let t0 = monotonic()
            _ = try plan.run(x)
            times.append(1000 * (monotonic() - t0))
        }
        return times
    }

    /// The `f` quantile (nearest rank, rounding up) of `times`.
    static func quantile(_ times: [Double], _ f: Double) -> Double {
        let t = times.sorted()
        return t[min(t.count - 1, Int((f * Double(t.count - 1)).rounded(.up)))]
    }

    /// The first `n` rows of a batch (repeated when the batch is smaller).
    static func rows(_ x: Tensor, _ n: Int) -> Tensor {
        let per = x.count / max(x.shape[0], 1)
        let out = Tensor(uninitialized: [n] + x.shape.dropFirst())
        for i in 0..<n { (out.pointer + i * per).update(from: x.pointer + (i % x.shape[0]) * per, count: per) }
        return out
    }
}

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract:
            "Compare models side by side on the same images: accuracy, agreement and KL against the first, calibration, size and speed.",
        discussion: """
            The first bundle is the reference (usually the teacher). For each model: accuracy, top-1 agreement with the \
            first, mean KL(first ‖ model) of the output distributions, negative log-likelihood, expected calibration error \
            (15 equal-width confidence bins), parameters, FLOPs per image, bundle size, latency at batch 1 (p50/p99) and \
            throughput at batch 64 (fused inference path, --threads workers).

            Examples:
              kdtool compare teacher.kdb student.kdb distilled.kdb --data data/mnist
              kdtool compare teacher.kdb distilled.kdb --data data/mnist --json
            """)

    @Argument(help: "Model bundles; the first is the reference.")
    var models: [String]

    @OptionGroup var data: DataOptions

    @Option(help: "Split to compare on.")
    var split: Split = .eval

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Option(help: "Batch-1 passes timed for the latency percentiles.")
    var latencyRuns: Int = 200

    @Flag(help: "Print one JSON document.")
    var json = false

    func validate() throws {
        guard models.count >= 1 else { throw ValidationError("name at least one bundle") }
        guard latencyRuns >= 1 else { throw ValidationError("--latency-runs must be at least 1") }
    }

    struct Row {
        var path: String
        var accuracy = 0.0
        var agreement = 0.0
        var kl = 0.0
        var nll = 0.0
        var ece = 0.0
        var parameters = 0
        var flops = 0
        var size = 0
        var p50 = 0.0
        var p99 = 0.0
        var throughput = 0.0
    }

    func run() throws {
        Parallel.configure(threads: threads)
        let loaded = try models.map { try loadModel($0) }
        let first = loaded[0].0
        for (path, (m, _)) in zip(models, loaded).dropFirst()
        where m.classCount != first.classCount || Array(m.inputShape.dropFirst()) != Array(first.inputShape.dropFirst()) {
            warn("kdtool: error: \(path) does not match \(models[0]) (inputs or classes differ); compare needs the same task")
            throw ExitCode.failure
        }
        let prep =
            first.preprocessing ?? Preprocessing(channels: first.inputShape[1], height: first.inputShape[2], width: first.inputShape[3])
        let set = try reportingErrors { try data.load(split, shape: prep.shape, prep: prep) }
        try reportingErrors { try checkCompatible(first, set) }
        let plans = try reportingErrors { try loaded.map { try InferencePlan($0.0) } }
        var rows = zip(models, loaded).map { path, l in
            var r = Row(path: path)
            r.parameters = l.0.parameterCount
            r.size = l.1.fileSize
            r.flops = l.0.flopsPerImage
            return r
        }
        let k = first.classCount
        let bins = 15
        var binCount = [[Int]](repeating: [Int](repeating: 0, count: bins), count: models.count)
        var binCorrect = binCount
        var binConf = [[Double]](repeating: [Double](repeating: 0, count: bins), count: models.count)
        var count = 0
        var sample: Tensor?
        let batcher = Batcher(set, batchSize: 256, shuffle: false, normalization: prep.normalization, seed: 0)
        for b in batcher.prefetching(epoch: 0) {
            if sample == nil { sample = b.inputs }
            let probs = try reportingErrors { try plans.map { Softmax.forward(try $0.run(b.inputs)) } }
            let n = b.labels.count
            for i in 0..<n {
                let ref = probs[0]
                var refBest = 0
                for j in 1..<k where ref[i * k + j] > ref[i * k + refBest] { refBest = j }
                for (m, p) in probs.enumerated() {
                    var best = 0
                    for j in 1..<k where p[i * k + j] > p[i * k + best] { best = j }
                    let y = b.labels[i]
                    if best == y { rows[m].accuracy += 1 }
                    if best == refBest { rows[m].agreement += 1 }
                    rows[m].nll -= log(max(Double(p[i * k + y]), 1e-12))
                    var kl = 0.0
                    for j in 0..<k where ref[i * k + j] > 0 {
                        kl += Double(ref[i * k + j]) * (log(Double(ref[i * k + j])) - log(max(Double(p[i * k + j]), 1e-30)))
                    }
                    rows[m].kl += kl
                    let conf = Double(p[i * k + best])
                    let bin = min(bins - 1, Int(conf * Double(bins)))
                    binCount[m][bin] += 1
                    binConf[m][bin] += conf
                    if best == y { binCorrect[m][bin] += 1 }
                }
            }
            count += n
        }
        let c = Double(max(count, 1))
        for m in rows.indices {
            rows[m].accuracy /= c
            rows[m].agreement /= c
            rows[m].nll /= c
            rows[m].kl /= c
            rows[m].ece = (0..<bins).reduce(0.0) { acc, b in
                let n = binCount[m][b]
                guard n > 0 else { return acc }
                return acc + Double(n) / c * abs(Double(binCorrect[m][b]) / Double(n) - binConf[m][b] / Double(n))
            }
        }
        if let sample {
            let one = SpeedProbe.rows(sample, 1)
            let batch = SpeedProbe.rows(sample, 64)
            for (m, plan) in plans.enumerated() {
                let lat = try reportingErrors { try SpeedProbe.latency(plan, one, runs: latencyRuns) }
                rows[m].p50 = lat.p50
                rows[m].p99 = lat.p99
                let t = try reportingErrors { try SpeedProbe.latency(plan, batch, runs: 10, warmup: 1) }
                rows[m].throughput = 64_000 / max(t.p50, 1e-9)
            }
        }
        if json {
            let doc = JSON.object([
                ("data", .string(data.data)), ("split", .string(split.rawValue)), ("count", .int(count)), ("threads", .int(threads)),
                (
                    "models",
                    .array(
                        rows.map { r in
                            .object([
                                ("model", .string(r.path)), ("accuracy", .number(r.accuracy)), ("agreement", .number(r.agreement)),
                                ("kl_from_first", .number(r.kl)), ("nll", .number(r.nll)), ("ece", .number(r.ece)),
                                ("parameters", .int(r.parameters)), ("flops", .int(r.flops)), ("bundle_bytes", .int(r.size)),
                                ("latency_ms_p50", .number(r.p50)), ("latency_ms_p99", .number(r.p99)),
                                ("images_per_second_batch64", .number(r.throughput)),
                            ])
                        })
                ),
            ])
            print(doc.render())
            return
        }
        print("\(count) images of \(data.data) [\(split.rawValue)], reference \(models[0]), \(threads) threads\n")
        print(
            Text.table(
                [
                    "model", "accuracy", "agree", "KL(ref‖m)", "NLL", "ECE", "params", "MFLOPs", "size", "p50 ms", "p99 ms", "img/s @64",
                ],
                rows.map { r in
                    [
                        r.path, Text.fixed(100 * r.accuracy, 2) + "%", Text.fixed(100 * r.agreement, 2) + "%", Text.number(r.kl),
                        Text.fixed(r.nll, 4), Text.fixed(r.ece, 4), Text.grouped(r.parameters), Text.fixed(Double(r.flops) / 1e6, 2),
                        Text.bytes(r.size), Text.fixed(r.p50, 3), Text.fixed(r.p99, 3), Text.grouped(Int(r.throughput)),
                    ]
                }, right: Set(1...11)))
    }
}
