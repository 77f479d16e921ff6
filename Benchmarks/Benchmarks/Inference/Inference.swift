// Batch inference: compute-only forward passes against ONNX Runtime (same model, batch and
// threads, in the same run), and end-to-end `infer` over real image files against decoding alone.
//   - 10,000 PNGs written from the shipped MNIST set (28×28 gray) through lenet5
//   - 1,000 JPEGs of 256×256 RGB (CIFAR images scaled up) resized to 32×32 for resnet20
//   - peak RSS with 10,000 vs 100,000 files
import Benchmark
import Foundation
import KDBundle
import KDData
import KDInference
import KDNN
import KDTensor

/// 2 (the issue's setting); `KDTOOL_BENCH_THREADS=1` for one core's costs without the other's interference.
let threads = ProcessInfo.processInfo.environment["KDTOOL_BENCH_THREADS"].flatMap { Int($0) } ?? 2
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let shared = root.deletingLastPathComponent().appendingPathComponent("shared/data").path
let work = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-bench-infer").path

func mkdirs(_ p: String) { try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true) }

/// Writes the image folders once (kept between runs in the temporary directory).
enum Inputs {
    static let mnist10k: String = {
        let dir = work + "/mnist-png-10k"
        if FileManager.default.fileExists(atPath: dir + "/done") { return dir }
        mkdirs(dir)
        let d = try! DataSource.load(shared + "/mnist", .init(split: .all))
        for i in 0..<d.count {
            let img = Image(width: 28, height: 28, channels: 1, pixels: Array(d.pixels[(i * 784)..<((i + 1) * 784)]))
            FileManager.default.createFile(atPath: dir + "/\(String(format: "%05d", i)).png", contents: Data(try! ImageDecoder.encodePNG(img)))
        }
        FileManager.default.createFile(atPath: dir + "/done", contents: nil)
        return dir
    }()

    /// 100,000 files: the 10k set ten times over, in subfolders (links keep the disk use small).
    static let mnist100k: String = {
        let dir = work + "/mnist-png-100k"
        if FileManager.default.fileExists(atPath: dir + "/done") { return dir }
        let source = mnist10k
        let names = try! FileManager.default.contentsOfDirectory(atPath: source).filter { $0.hasSuffix(".png") }
        for copy in 0..<10 {
            let sub = dir + "/copy\(copy)"
            mkdirs(sub)
            for n in names { link(source + "/" + n, sub + "/" + n) }
        }
        FileManager.default.createFile(atPath: dir + "/done", contents: nil)
        return dir
    }()

    static let jpeg1k: String = {
        let dir = work + "/jpeg-256-1k"
        if FileManager.default.fileExists(atPath: dir + "/done") { return dir }
        mkdirs(dir)
        let d = try! DataSource.load(shared + "/cifar10/cifar-10-binary-subset.tar.gz", .init(split: .train))
        for i in 0..<1000 {
            let planar = Array(d.pixels[(i * 3072)..<((i + 1) * 3072)])
            var hwc = [UInt8](repeating: 0, count: 3072)
            for p in 0..<1024 { for c in 0..<3 { hwc[p * 3 + c] = planar[c * 1024 + p] } }
            let big = Image(width: 32, height: 32, channels: 3, pixels: hwc).resized(width: 256, height: 256)
            FileManager.default.createFile(atPath: dir + "/\(String(format: "%04d", i)).jpg", contents: Data(try! ImageDecoder.encodeJPEG(big)))
        }
        FileManager.default.createFile(atPath: dir + "/done", contents: nil)
        return dir
    }()
}

func model(_ kind: Architecture.Kind, _ input: [Int]) -> (Model, String) {
    let m = try! Architecture(kind).build(input: input, classes: 10, seed: 0)
    m.labels = Labels((0..<10).map(String.init))
    m.preprocessing = Preprocessing(channels: input[0], height: input[1], width: input[2])
    let path = work + "/\(kind.rawValue).kdb"
    mkdirs(work)
    try! BundleWriter.write(m.contents(), to: path)
    return (m, path)
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// ONNX Runtime's images/s on the same bundle, batch and threads (nil without .build/venv-torch).
func ortImagesPerSecond(_ bundle: String, batch: Int) -> Double? {
    let python = root.appendingPathComponent(".build/venv-torch/bin/python3").path
    guard FileManager.default.isExecutableFile(atPath: python) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = [root.appendingPathComponent("Benchmarks/peers/ort_infer.py").path, bundle, "--batch", "\(batch)", "--threads", "\(threads)", "--seconds", "2"]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["images_per_second"] as? Double
}

func predictor(_ m: Model, batch: Int = 64) -> Predictor {
    var o = Predictor.Options()
    o.batchSize = batch
    o.threads = threads
    return try! Predictor(model: m, options: o)
}

/// Decoding and preprocessing alone, the same way infer does it, on the same threads.
func decodeOnly(_ files: [String], shape: [Int]) {
    Parallel.configure(threads: threads)
    Parallel.chunks(files.count) { _, r in
        for i in r {
            if let img = try? ImageDecoder.decode(file: files[i]) {
                blackHole(ImageFolder.prepare(img, shape: shape, alpha: .white, resize: .stretch))
            }
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    // Debian's OpenBLAS may not know this CPU and fall back to its SSE3 kernels (BLAS.swift):
    // restart on the fitting ones, as kdtool does, so sgemm is measured at its real speed.
    BLASCore.restartWithBetterKernelsIfNeeded()
    let larger = { (n: String) in BenchmarkMetric.custom(n, polarity: .prefersLarger, useScalingFactor: false) }
    let smaller = { (n: String) in BenchmarkMetric.custom(n, polarity: .prefersSmaller, useScalingFactor: false) }
    let ips = larger("images/s")
    let ortRatio = larger("ratio to ONNX Runtime ×1000")
    let ortIps = larger("ONNX Runtime images/s")

    for (kind, input) in [(Architecture.Kind.lenet5, [1, 28, 28]), (.resnet8, [1, 28, 28]), (.resnet20, [3, 32, 32])] {
        for batch in [1, 64] {
            Benchmark("compute only \(kind.rawValue) batch \(batch)", configuration: .init(metrics: [ips, ortIps, ortRatio], maxIterations: 3)) { b in
                let (m, path) = model(kind, input)
                Parallel.configure(threads: threads)
                let x = Tensor(shape: [batch] + input, repeating: 0.5)
                let plan = try InferencePlan(m)
                _ = try plan.run(x)
                var ours: [Double] = []
                var peer: [Double] = []
                for _ in 0..<3 {
                    let reps = max(3, 6400 / (batch * (kind == .resnet20 ? 8 : 1)))
                    let t = try seconds { for _ in 0..<reps { blackHole(try plan.run(x)) } }
                    ours.append(Double(reps * batch) / t)
                    Parallel.configure(threads: threads)
                    if let v = ortImagesPerSecond(path, batch: batch) { peer.append(v) }
                }
                b.measurement(ips, Int(median(ours)))
                if !peer.isEmpty {
                    b.measurement(ortIps, Int(median(peer)))
                    b.measurement(ortRatio, Int(1000 * median(ours) / median(peer)))
                }
            }
        }
    }

    let e2eRatio = smaller("end-to-end / decode-only ×1000")
    for (name, dir, kind, input) in [
        ("10k MNIST PNGs, lenet5", { Inputs.mnist10k }, Architecture.Kind.lenet5, [1, 28, 28]),
        ("1k 256×256 JPEGs → 32×32, resnet20", { Inputs.jpeg1k }, .resnet20, [3, 32, 32]),
    ] {
        Benchmark("infer end to end: \(name)", configuration: .init(metrics: [ips, e2eRatio, .peakMemoryResident], maxIterations: 3)) { b in
            let files = try ImageFolder.files(in: dir()).filter { !$0.hasSuffix("done") }
            let (m, _) = model(kind, input)
            let p = predictor(m)
            // Five runs of each, alternated; the ratio is the median of each run's over the decoding
            // right after it, so a machine that speeds up or slows down between runs moves both.
            var e2e: [Double] = []
            var ratios: [Double] = []
            for _ in 0..<5 {
                let t = try seconds { try p.run(files) { blackHole($0); return true } }
                e2e.append(t)
                ratios.append(t / seconds { decodeOnly(files, shape: input) })
            }
            b.measurement(ips, Int(Double(files.count) / median(e2e)))
            b.measurement(e2eRatio, Int(1000 * median(ratios)))
        }
    }

    for (name, dir) in [("10,000", { Inputs.mnist10k }), ("100,000", { Inputs.mnist100k })] {
        Benchmark("peak RSS: infer over \(name) files", configuration: .init(metrics: [.peakMemoryResident, .wallClock], maxIterations: 1)) { b in
            let (m, _) = model(.lenet5, [1, 28, 28])
            let folder = dir()
            b.startMeasurement()
            // As `kdtool infer` reads a folder: walked as the run goes, never listed whole.
            var inputs = InputList([folder], recursive: true) { nil }
            try predictor(m).run(next: {
                while let p = try inputs.next() {
                    if !p.hasSuffix("done") { return p }
                }
                return nil
            }) { blackHole($0); return true }
            b.stopMeasurement()
        }
    }
}
