// kdtool's kernels on the layers of Benchmarks/peers/onednn_layers.cpp (the same shapes, ReLU6
// fused, inference, blocked layout, 2 threads): depthwise 3×3 on the channel-blocked depthwise
// kernel, pointwise 1×1 on the direct convolution, and on the packed linear kernel over pixels
// where the inference plan puts maps of at most 16 pixels (`InferencePlan.pointwise`). One line per
// layer: name, batch, median ms of 50 calls after 10.
// Built and run by ./layers (next to this file), against `swift build -c release`'s objects.
import Foundation
import KDTensor

Parallel.configure(threads: 2)
struct Layer { let name: String; let n, c, o, h, w, k, s, groups: Int }
let layers = [
    Layer(name: "dw3x3 s1 144ch 32x32", n: 1, c: 144, o: 144, h: 32, w: 32, k: 3, s: 1, groups: 144),
    Layer(name: "dw3x3 s2 144ch 32x32", n: 1, c: 144, o: 144, h: 32, w: 32, k: 3, s: 2, groups: 144),
    Layer(name: "pw 24->144 32x32", n: 1, c: 24, o: 144, h: 32, w: 32, k: 1, s: 1, groups: 1),
    Layer(name: "pw 144->24 32x32", n: 1, c: 144, o: 24, h: 32, w: 32, k: 1, s: 1, groups: 1),
    Layer(name: "pw 320->1280 4x4", n: 1, c: 320, o: 1280, h: 4, w: 4, k: 1, s: 1, groups: 1),
    Layer(name: "dw3x3 s1 144ch 32x32", n: 64, c: 144, o: 144, h: 32, w: 32, k: 3, s: 1, groups: 144),
    Layer(name: "pw 24->144 32x32", n: 64, c: 24, o: 144, h: 32, w: 32, k: 1, s: 1, groups: 1),
    Layer(name: "pw 320->1280 4x4", n: 64, c: 320, o: 1280, h: 4, w: 4, k: 1, s: 1, groups: 1),
    Layer(name: "dw3x3 s1 144ch 56x56", n: 1, c: 144, o: 144, h: 56, w: 56, k: 3, s: 1, groups: 144),
    Layer(name: "pw 24->144 56x56", n: 1, c: 24, o: 144, h: 56, w: 56, k: 1, s: 1, groups: 1),
    Layer(name: "dw5x5 s1 240ch 8x8", n: 1, c: 240, o: 240, h: 8, w: 8, k: 5, s: 1, groups: 240),
    Layer(name: "dw5x5 s1 672ch 4x4", n: 1, c: 672, o: 672, h: 4, w: 4, k: 5, s: 1, groups: 672),
    Layer(name: "dw5x5 s2 144ch 16x16", n: 1, c: 144, o: 144, h: 16, w: 16, k: 5, s: 2, groups: 144),
    Layer(name: "dw5x5 s1 240ch 8x8", n: 64, c: 240, o: 240, h: 8, w: 8, k: 5, s: 1, groups: 240),
]
func median(_ body: () throws -> Void) rethrows -> Double {
    var times: [Double] = []
    for i in 0..<60 {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        if i >= 10 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6) }
    }
    return times.sorted()[times.count / 2]
}
let relu6 = Epilogue(.activation(.clip(min: 0, max: 6)))
for l in layers {
    let pad = l.k / 2
    let window = Window(kernel: [l.k, l.k], stride: [l.s, l.s], pads: [pad, pad, pad, pad])
    let weight = Tensor(shape: [l.o, l.c / l.groups, l.k, l.k], repeating: 0.01)
    let bias = Tensor(shape: [l.o], repeating: 0.1)
    let x = BlockedTensor(Tensor(shape: [l.n, l.c, l.h, l.w], repeating: 0.5), pad: pad)
    var line = "\(l.name) | batch \(l.n) | "
    if l.groups > 1 {
        let filters = Depthwise.BlockedFilters(weight: weight, bias: bias)  // packed once, as an inference plan does
        line += String(format: "%.4f ms | depthwise blocked", try median { _ = try Depthwise.blocked(x, filters: filters, window, relu6, outPad: pad) })
    } else {
        let conv = DirectConv(weight: weight, bias: bias, window: window, inBlock: 8)
        line += String(format: "%.4f ms | direct", try median { _ = try conv(x, relu6, outPad: pad) })
        if l.h * l.w <= 16 {
            // What InferencePlan.pointwise runs: pixel rows, the packed linear kernel, back to blocks.
            let op = PackedLinear(weight: try weight.reshaped([l.o, l.c]), bias: bias)
            let rows = Tensor(shape: [l.n * l.h * l.w, l.c], repeating: 0.5)
            line += String(format: " | %.4f ms | packed linear over pixels (kernel only)", try median { _ = try op(rows, relu6) })
        }
    }
    print(line)
}
