import Testing

@testable import KDTensor

/// The depthwise kernels against the im2col reference, across the cases their fast paths split on:
/// channels that do not fill a block of 8, 3×3 (registers) and 5×5 taps, strides 1 and 2, padding up
/// to the halo, and epilogues with f(0) = 0 and f(0) ≠ 0 (whose padding lanes must be cleared).
@Suite("Depthwise convolution kernels")
struct DepthwiseTests {
    static func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ g: Window, _ f: Activation?) throws -> Tensor {
        let y = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: x.shape[1], allowFast: false)
        if let f { f.forward(y.pointer, y.pointer, count: y.count) }
        return y
    }

    static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = RandomSource(seed: seed)
        let t = Tensor(uninitialized: shape)
        for i in 0..<t.count { t[i] = rng.nextFloat() * 2 - 1 }
        return t
    }

    @Test(
        "blocked and NCHW kernels match im2col",
        arguments: [
            (13, 9, 3, 1, 1), (13, 9, 3, 2, 1), (16, 12, 5, 1, 2), (16, 11, 5, 2, 2), (8, 7, 3, 1, 1), (24, 14, 7, 1, 3),
        ])
    func matches(c: Int, size: Int, k: Int, stride: Int, pad: Int) throws {
        let x = Self.random([2, c, size, size + 1], seed: 1)
        let w = Self.random([c, 1, k, k], seed: 2)
        let b = Self.random([c], seed: 3)
        let g = Window(kernel: [k, k], stride: [stride, stride], pads: [pad, pad, pad, pad])
        for f in [nil, Activation.hardswish, .hardsigmoid(alpha: 0.2, beta: 0.5), .clip(min: 0, max: 6)] as [Activation?] {
            let want = try Self.reference(x, w, b, g, f)
            let plain = try Depthwise.forward(x: x, weight: w, bias: b, g, Epilogue(f.map { .activation($0) }))
            let blocked = try Depthwise.blocked(
                BlockedTensor(x, pad: 3), weight: w, bias: b, g, Epilogue(f.map { .activation($0) }), outPad: 1)
            let scale = max(1, want.array.map(abs).max() ?? 1)
            #expect(plain.shape == want.shape && blocked.shape == want.shape)
            #expect(zip(plain.array, want.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "NCHW, \(String(describing: f))")
            #expect(zip(blocked.plain().array, want.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "blocked, \(String(describing: f))")
            // The halo and the lanes past the channels stay zero for the next layer.
            let padded = BlockedTensor(uninitialized: blocked.n, channels: blocked.channels, h: blocked.h, w: blocked.w, pad: 1)
            let lanes = blocked.blocks * 8 - c
            if lanes > 0 || blocked.pad > 0 {
                #expect(blocked.data.count == padded.data.count)
                let total = blocked.data.array.reduce(0) { $0 + abs($1) }
                let interior = blocked.plain().array.reduce(0) { $0 + abs($1) }
                #expect(abs(total - interior) <= 1e-3 * max(1, interior), "only the interior of the real channels is non-zero")
            }
        }
    }
}
