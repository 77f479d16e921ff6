// One 3×3 direct convolution (stride 1, padding 1 read from the input's halo, ReLU) timed
// alone, as `DirectConv` runs it inside a network: C input channels, O outputs, H × H pixels,
// N images, on one thread; prints the best and the median GFLOP/s of REPS calls.
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
let conv = DirectConv(
    weight: Tensor(shape: [o, c, 3, 3], values: uniform(o * c * 9, -0.1...0.1)), bias: Tensor(shape: [o], values: uniform(o, -0.1...0.1)),
    window: Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1]), inBlock: 8)
let x = BlockedTensor(Tensor(shape: [n, c, h, h], values: uniform(n * c * h * h, 0...1)), pad: 1)
var times: [Double] = []
for _ in 0..<reps {
    let start = DispatchTime.now().uptimeNanoseconds
    _ = try conv(x, relu: true, outPad: 1)
    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
}
times.sort()
let flops = Double(2 * n * o * c * 9 * h * h)
print(
    String(
        format: "%d → %d channels, %d×%d, %d images: best %.1f GFLOP/s, median %.1f GFLOP/s (%.3f ms)", c, o, h, h, n,
        flops / times[0] / 1e9, flops / times[times.count / 2] / 1e9, times[times.count / 2] * 1e3))
