// One 3×3 convolution (stride 1, padding 1 read from the input's halo, ReLU) timed alone, as
// inference runs it: C input channels, O outputs, H × H pixels, N images, on one thread; on the
// direct kernel and by Winograd's F(2×2, 3×3) and F(4×4, 3×3), the three alternated in rounds.
// Prints the best and the median GFLOP/s of REPS calls of each (counted as the direct
// convolution's 2·N·O·C·9·H² operations, so the figures compare), their ratios, and the largest
// difference of each Winograd output from the direct one.
// Built and run by ./conv-loop (next to this file), against `swift build -c release`'s objects.
import Foundation
import KDTensor

let args = CommandLine.arguments.dropFirst().compactMap { Int($0) }
guard args.count == 5, args.allSatisfy({ $0 > 0 }) else {
    FileHandle.standardError.write("usage: conv-loop C O H N REPS   (e.g. conv-loop 64 64 8 4 300)\n".data(using: .utf8)!)
    exit(2)
}
let (c, o, h, n, reps) = (args[0], args[1], args[2], args[3], args[4])
var rng = SystemRandomNumberGenerator()
func uniform(_ count: Int, _ range: ClosedRange<Float>) -> [Float] { (0..<count).map { _ in Float.random(in: range, using: &rng) } }
let weight = Tensor(shape: [o, c, 3, 3], values: uniform(o * c * 9, -0.1...0.1))
let bias = Tensor(shape: [o], values: uniform(o, -0.1...0.1))
let window = Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1])
let direct = DirectConv(weight: weight, bias: bias, window: window, inBlock: 8)
let winograd = DirectConv(weight: weight, bias: bias, window: window, inBlock: 8, winograd: true).winograd!
let x = BlockedTensor(
    Tensor(shape: [n, c, h, h], values: uniform(n * c * h * h, 0...1)),
    pad: max(WinogradConv.halo(h: h, w: h, tile: 2), WinogradConv.halo(h: h, w: h, tile: 4)))
let runs: [(String, () throws -> BlockedTensor)] = [
    ("direct", { try direct(x, .relu, outPad: 1) }),
    ("Winograd F(2×2, 3×3)", { try winograd(x, .relu, outPad: 1, tile: 2) }),
    ("Winograd F(4×4, 3×3)", { try winograd(x, .relu, outPad: 1, tile: 4) }),
]
let reference = try runs[0].1().plain()
let differences = try runs.dropFirst().map { run in
    let y = try run.1().plain()
    return (0..<y.count).map { abs(y[$0] - reference[$0]) }.max() ?? 0
}

var times: [[Double]] = runs.map { _ in [] }
for _ in 0..<10 {
    for (i, run) in runs.enumerated() {
        for _ in 0..<max(1, reps / 10) {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try run.1()
            times[i].append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
    }
}
let flops = Double(2 * n * o * c * 9 * h * h)
for (run, t) in zip(runs, times) {
    let s = t.sorted()
    print(
        String(
            format: "%d → %d channels, %d×%d, %d images, %@: best %.1f GFLOP/s, median %.1f GFLOP/s (%.3f ms)", c, o, h, h, n, run.0,
            flops / s[0] / 1e9, flops / s[s.count / 2] / 1e9, s[s.count / 2] * 1e3))
}
let medians = times.map { $0.sorted()[$0.count / 2] }
print(
    String(
        format: "÷ direct time: F(2×2) %.2f, F(4×4) %.2f; largest output difference from direct: F(2×2) %.2e, F(4×4) %.2e",
        medians[1] / medians[0], medians[2] / medians[0], differences[0], differences[1]))
