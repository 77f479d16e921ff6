// One training step (forward + backward + SGD) at batch 128, 2 threads, against two peers measured
// in the same run: OpenBLAS sgemm's GFLOP/s (how much of the machine's matrix speed the step
// reaches) and PyTorch's CPU training step on the same architecture, when .build/venv-torch exists
// (tools/setup-peers installs it).
import Benchmark
import Foundation
import KDNN
import KDTensor

let threads = 2
let batch = 128

struct Case {
    let name: String
    let arch: Architecture.Kind
    let input: [Int]
    let torchName: String
    var width: Double = 1
}

let cases = [
    Case(name: "resnet8 1×28×28", arch: .resnet8, input: [1, 28, 28], torchName: "resnet8"),
    Case(name: "resnet20 3×32×32", arch: .resnet20, input: [3, 32, 32], torchName: "resnet20"),
    Case(name: "lenet5 1×28×28", arch: .lenet5, input: [1, 28, 28], torchName: "lenet5"),
    // The mobile students (CIFAR stem), against torchvision's builds of the same networks.
    Case(name: "mobilenetv2 ×1.0 3×32×32", arch: .mobilenetv2, input: [3, 32, 32], torchName: "mobilenetv2@1.0"),
    Case(name: "mobilenetv2 ×0.5 3×32×32", arch: .mobilenetv2, input: [3, 32, 32], torchName: "mobilenetv2@0.5", width: 0.5),
    Case(name: "shufflenetv2 ×1.0 3×32×32", arch: .shufflenetv2, input: [3, 32, 32], torchName: "shufflenetv2@1.0"),
    Case(name: "efficientnet-lite0 3×32×32", arch: .efficientnetLite0, input: [3, 32, 32], torchName: "efficientnet-lite0@1.0"),
]

/// A model, fixed random data and an optimizer, ready to step.
final class StepRunner {
    let model: Model
    var optimizer = Optimizer(.sgd)
    let x: Tensor
    let labels: [Int]
    /// Forward FLOPs per image; a training step costs about three times that.
    let forwardFlops: Int

    init(_ c: Case) throws {
        var a = Architecture(c.arch)
        a.width = c.width
        let m = try a.build(input: c.input, classes: 10, seed: 0)
        var rng = RandomSource(seed: 1)
        x = Tensor(shape: [batch] + c.input, values: (0..<(batch * c.input.reduce(1, *))).map { _ in rng.nextFloat() })
        labels = (0..<batch).map { _ in rng.nextInt(below: 10) }
        let shapes = Dictionary(uniqueKeysWithValues: m.tensorNames.map { ($0, (m.parameters[$0] ?? m.buffers[$0])!.shape) })
        forwardFlops = try m.graph.stats(tensorShapes: shapes, batch: 1).reduce(0) { $0 + $1.flops }
        model = m
    }

    func step() throws {
        var rng = RandomSource(seed: 0)
        let tape = Tape()
        let f = try model.forward(x, training: true, tape: tape, rng: &rng)
        let (_, seeds) = try crossEntropyObjective(Batch(inputs: x, labels: labels, indices: []), f)
        try tape.backward(seeds)
        var grads: [String: Tensor] = [:]
        for n in model.trainableNames { if let v = f.parameter(n), let g = tape.grad(v) { grads[n] = g } }
        optimizer.step(parameters: model.parameters, gradients: grads, lr: 0.01)
    }
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// PyTorch's images/s for the same model, batch and threads, or nil without the peer venv.
func torchImagesPerSecond(_ model: String) -> Double? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let python = root.deletingLastPathComponent().appendingPathComponent(".build/venv-torch/bin/python3").path
    guard FileManager.default.isExecutableFile(atPath: python) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = [root.appendingPathComponent("peers/torch_train_step.py").path, model, "--threads", "\(threads)", "--seconds", "2"]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    return doc?["images_per_second"] as? Double
}

let benchmarks: @Sendable () -> Void = {
    // Debian's OpenBLAS may not know this CPU and fall back to its SSE3 kernels (BLAS.swift):
    // restart on the fitting ones, as kdtool does, so sgemm is measured at its real speed.
    BLASCore.restartWithBetterKernelsIfNeeded()
    // Freed step buffers stay in the heap, as in kdtool (KDTool.main).
    keepFreedMemory()
    Parallel.configure(threads: threads)
    let scaled = { (name: String) in BenchmarkMetric.custom(name, polarity: .prefersLarger, useScalingFactor: false) }
    let imagesPerSecond = scaled("images/s")
    let gflops = scaled("GFLOP/s")
    let sgemmFraction = scaled("fraction of sgemm ×1000")
    let torchRatio = scaled("ratio to PyTorch ×1000")
    let sgemmPeak = scaled("sgemm GFLOP/s (n=1024, 2 threads, OpenBLAS \(BLASCore.name))")

    for c in cases {
        Benchmark(
            "train step \(c.name) batch \(batch)",
            configuration: .init(metrics: [.wallClock, .peakMemoryResident], warmupIterations: 2, maxDuration: .seconds(10), maxIterations: 20)
        ) { b in
            let runner = try StepRunner(c)
            b.startMeasurement()
            for _ in b.scaledIterations { try runner.step() }
            b.stopMeasurement()
        }
        Benchmark(
            "peers: \(c.name)",
            configuration: .init(
                metrics: [imagesPerSecond, gflops, sgemmFraction, torchRatio, sgemmPeak], warmupIterations: 0, maxIterations: 3)
        ) { b in
            let runner = try StepRunner(c)
            try runner.step()
            // Ours, sgemm and PyTorch alternate so the machine's drift hits all three alike.
            var ours: [Double] = []
            var blas: [Double] = []
            var torch: [Double] = []
            for _ in 0..<3 {
                let t = try seconds { for _ in 0..<5 { try runner.step() } } / 5
                ours.append(Double(batch) / t)
                blas.append(BLAS.referenceGFLOPs(n: 1024, threads: threads))
                if let v = torchImagesPerSecond(c.torchName) { torch.append(v) }
            }
            Parallel.configure(threads: threads)
            let ips = median(ours)
            let achieved = ips * Double(3 * runner.forwardFlops) / 1e9
            b.measurement(imagesPerSecond, Int(ips))
            b.measurement(gflops, Int(achieved))
            b.measurement(sgemmFraction, Int(1000 * achieved / median(blas)))
            b.measurement(sgemmPeak, Int(median(blas)))
            if !torch.isEmpty { b.measurement(torchRatio, Int(1000 * ips / median(torch))) }
        }
    }
}
