import Testing

@testable import KDTensor

/// The blocked convolution gradients (`BlockedConvGradient`) against the NCHW reference, for the
/// channel counts that pick each weight tile: one input block (8 lanes), pairs of blocks (16 lanes
/// with AVX-512), an odd number of blocks (16-lane vectors and an 8-lane last block), and output
/// counts that are not whole blocks.
@Suite("Blocked convolution gradients")
struct ConvGradientTests {
    struct Case: CustomStringConvertible, Sendable {
        let c: Int
        let o: Int
        let k: Int
        let stride: Int
        let pad: Int
        let hw: Int
        var description: String { "\(c) → \(o), \(k)×\(k) stride \(stride) pad \(pad) at \(hw)×\(hw)" }
    }

    static let cases = [
        Case(c: 8, o: 16, k: 1, stride: 1, pad: 0, hw: 6),
        Case(c: 24, o: 40, k: 1, stride: 1, pad: 0, hw: 7),
        Case(c: 58, o: 58, k: 1, stride: 1, pad: 0, hw: 5),
        Case(c: 116, o: 20, k: 1, stride: 1, pad: 0, hw: 4),
        Case(c: 64, o: 24, k: 1, stride: 2, pad: 0, hw: 7),
        Case(c: 40, o: 24, k: 3, stride: 1, pad: 1, hw: 6),
        Case(c: 24, o: 16, k: 3, stride: 2, pad: 1, hw: 7),
        Case(c: 16, o: 12, k: 5, stride: 1, pad: 2, hw: 6),
        Case(c: 24, o: 8, k: 2, stride: 2, pad: 0, hw: 6),
    ]

    static func random(_ shape: [Int], _ rng: inout RandomSource) -> Tensor {
        Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.nextFloat() - 0.5 })
    }

    /// The largest difference over the largest reference element.
    static func error(_ a: Tensor, _ b: Tensor) -> Float {
        let scale = max(1e-3, b.array.map(abs).max() ?? 0)
        return (0..<b.count).map { abs(a[$0] - b[$0]) }.max().map { $0 / scale } ?? 0
    }

    @Test("dW and dX match the NCHW gradients, with one and two threads", arguments: cases)
    func matchesPlain(c: Case) throws {
        var rng = RandomSource(seed: 21)
        let x = Self.random([3, c.c, c.hw, c.hw], &rng)
        let w = Self.random([c.o, c.c, c.k, c.k], &rng)
        let g = Window(kernel: [c.k, c.k], stride: [c.stride, c.stride], pads: Array(repeating: c.pad, count: 4))
        let (ho, wo) = (try g.outputSize(c.hw, axis: 0), try g.outputSize(c.hw, axis: 1))
        let dy = Self.random([3, c.o, ho, wo], &rng)
        let want = Conv2d.backward(dy: dy, x: x, weight: w, hasBias: false, g, groups: 1, needInput: true, allowFast: false)
        #expect(BlockedConvGradient.applies(g, groups: 1))
        defer { Parallel.configure(threads: 1) }
        for threads in [1, 2] {
            Parallel.configure(threads: threads)
            let dw = BlockedConvGradient.weight(x: BlockedTensor(x, pad: 1), dy: BlockedTensor(dy, pad: 1), window: g)
            #expect(dw.shape == want.dw.shape)
            #expect(Self.error(dw, want.dw) <= 1e-5, "\(c), \(threads) threads: dW differs by \(Self.error(dw, want.dw))")
            let dx = BlockedConvGradient.input(dy: BlockedTensor(dy, pad: 1), weight: w, window: g, h: c.hw, w: c.hw, pad: 1).plain()
            #expect(dx.shape == want.dx!.shape)
            #expect(Self.error(dx, want.dx!) <= 1e-5, "\(c), \(threads) threads: dX differs by \(Self.error(dx, want.dx!))")
        }
    }

    @Test(
        "1×1 convolutions on small maps as GEMMs over pixel rows match the NCHW forward and gradients, halo zero",
        arguments: [(58, 20, 4, 4, true), (24, 13, 3, 4, false), (8, 40, 2, 2, true), (116, 232, 4, 4, false)])
    func pointwiseGEMM(c: Int, o: Int, h: Int, w: Int, bias: Bool) throws {
        var rng = RandomSource(seed: 5)
        let g = Window(kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0])
        #expect(PointwiseGEMM.applies(g, groups: 1, h: h, w: w))
        let x = Self.random([3, c, h, w], &rng)
        let weight = Self.random([o, c, 1, 1], &rng)
        let b = bias ? Self.random([o], &rng) : nil
        let dy = Self.random([3, o, h, w], &rng)
        let wantY = try Conv2d.forward(x: x, weight: weight, bias: b, g, groups: 1, allowFast: false)
        let want = Conv2d.backward(dy: dy, x: x, weight: weight, hasBias: false, g, groups: 1, needInput: true, allowFast: false)
        defer { Parallel.configure(threads: 1) }
        for threads in [1, 2] {
            Parallel.configure(threads: threads)
            Self.poison(3 * ((max(c, o) + 7) / 8) * (h + 2) * (w + 2) * 8)
            let y = PointwiseGEMM.forward(BlockedTensor(x, pad: 1), weight: weight, bias: b, outPad: 1)
            #expect(DirectConvTests.halo(y).allSatisfy { $0 == 0 })
            #expect(Self.error(y.plain(), wantY) <= 1e-5, "\(c) → \(o), \(threads) threads: Y differs by \(Self.error(y.plain(), wantY))")
            Self.poison(3 * ((c + 7) / 8) * (h + 2) * (w + 2) * 8)
            let grads = PointwiseGEMM.backward(
                x: BlockedTensor(x, pad: 1), dy: BlockedTensor(dy, pad: 1), weight: weight, needInput: true, pad: 1)
            let dx = try #require(grads.dx)
            #expect(DirectConvTests.halo(dx).allSatisfy { $0 == 0 })
            #expect(Self.error(dx.plain(), want.dx!) <= 1e-5, "\(c) → \(o), \(threads) threads: dX differs")
            #expect(grads.dw.shape == want.dw.shape)
            #expect(
                Self.error(grads.dw, want.dw) <= 1e-5, "\(c) → \(o), \(threads) threads: dW differs by \(Self.error(grads.dw, want.dw))")
            #expect(PointwiseGEMM.backward(x: BlockedTensor(x), dy: BlockedTensor(dy), weight: weight, needInput: false, pad: 0).dx == nil)
        }
    }

    @Test("the GEMMs take 1×1 convolutions, stride 1, on maps up to 4 × 4 only")
    func pointwiseGEMMApplies() {
        let one = Window(kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0])
        #expect(PointwiseGEMM.applies(one, groups: 1, h: 4, w: 4))
        #expect(PointwiseGEMM.applies(one, groups: 1, h: 1, w: 1))
        #expect(!PointwiseGEMM.applies(one, groups: 1, h: 8, w: 8))
        #expect(!PointwiseGEMM.applies(one, groups: 1, h: 4, w: 5))
        #expect(!PointwiseGEMM.applies(one, groups: 2, h: 4, w: 4))
        #expect(!PointwiseGEMM.applies(Window(kernel: [1, 1], stride: [2, 2], pads: [0, 0, 0, 0]), groups: 1, h: 4, w: 4))
        #expect(!PointwiseGEMM.applies(Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1]), groups: 1, h: 4, w: 4))
        #expect(!PointwiseGEMM.applies(Window(kernel: [1, 1], stride: [1, 1], pads: [1, 1, 1, 1]), groups: 1, h: 4, w: 4))
    }

    /// Leaves buffers of `floats` floats full of NaN in the pool, for the next tensors of that size.
    static func poison(_ floats: Int) {
        let held = (0..<3).map { _ in Tensor(shape: [floats], repeating: .nan) }
        withExtendedLifetime(held) {}
    }

    @Test("kernels that clear their output's halo row by row or plane by plane leave no stale values in a reused buffer")
    func halosInReusedBuffers() throws {
        var rng = RandomSource(seed: 2)
        let x = BlockedTensor(Self.random([2, 24, 6, 7], &rng), pad: 1)
        func check(_ y: BlockedTensor, _ what: String) {
            #expect(DirectConvTests.halo(y).allSatisfy { $0 == 0 }, "\(what): the halo is not zero")
            #expect(y.plain().array.allSatisfy { !$0.isNaN }, "\(what): stale values inside")
        }
        // Direct convolutions: 1 × 1 and 3 × 3, 8 and 16 lanes (with a half tail), with a halo of 1 and 2.
        for (o, k) in [(8, 1), (16, 1), (24, 3), (16, 3), (40, 1)] {
            let conv = DirectConv(
                weight: Self.random([o, 24, k, k], &rng), bias: nil,
                window: Window(kernel: [k, k], stride: [1, 1], pads: Array(repeating: k / 2, count: 4)), inBlock: 8)
            for outPad in [1, 2] {
                Self.poison(2 * ((o + 7) / 8) * (6 + 2 * outPad) * (7 + 2 * outPad) * 8)
                check(try conv(x, Epilogue(relu: true), outPad: outPad), "conv \(o) × \(k)×\(k), halo \(outPad)")
            }
        }
        // dX of a stride-1 convolution.
        let w = Self.random([16, 24, 1, 1], &rng)
        let dy = BlockedTensor(Self.random([2, 16, 6, 7], &rng), pad: 1)
        Self.poison(x.data.count)
        check(
            BlockedConvGradient.input(
                dy: dy, weight: w, window: Window(kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0]), h: 6, w: 7, pad: 1),
            "dX")
        // Batch norm + ReLU forward and backward, and a gather.
        let (scale, bias) = (Tensor(shape: [24], repeating: 1.5), Tensor(shape: [24], repeating: 0.1))
        Self.poison(x.data.count)
        let (y, saved) = try BlockedOps.batchNormTraining(
            x, scale: scale, bias: bias, runningMean: Tensor(zeros: [24]), runningVar: Tensor(shape: [24], repeating: 1), epsilon: 1e-5,
            momentum: 0.1, relu: true)
        check(y, "batch norm + ReLU")
        Self.poison(x.data.count)
        check(
            try BlockedOps.batchNormBackward(
                dy: BlockedTensor(Self.random([2, 24, 6, 7], &rng), pad: 1), saved: saved, scale: scale, reluOutput: y
            ).dx, "batch norm's dX")
        Self.poison(x.data.count)
        check(try BlockedTensor.gatherChannels([x], (0..<24).map { .init(input: 0, channel: 23 - $0) }, outPad: 1), "gather")
    }

    @Test("batch norm's, the ReLU's and relu(a + b)'s backward written over dy give the bits of a new buffer, halo zero")
    func batchNormBackwardOverDy() throws {
        var rng = RandomSource(seed: 11)
        let x = BlockedTensor(Self.random([3, 20, 5, 6], &rng), pad: 1)
        let (scale, bias) = (Self.random([20], &rng), Self.random([20], &rng))
        for upper in [Float.infinity, 6] {
            let (y, saved) = try BlockedOps.batchNormTraining(
                x, scale: scale, bias: bias, runningMean: Tensor(zeros: [20]), runningVar: Tensor(shape: [20], repeating: 1),
                epsilon: 1e-5, momentum: 0.1, relu: true, upper: upper)
            let dy = Self.random([3, 20, 5, 6], &rng)
            for relu in [false, true] {
                let fresh = try BlockedOps.batchNormBackward(
                    dy: BlockedTensor(dy, pad: 1), saved: saved, scale: scale, reluOutput: relu ? y : nil, upper: upper)
                let given = BlockedTensor(dy, pad: 1)
                let over = try BlockedOps.batchNormBackward(
                    dy: given, saved: saved, scale: scale, reluOutput: relu ? y : nil, upper: upper, overwrite: true)
                #expect(over.dx.data.pointer == given.data.pointer, "dx was written over dy")
                #expect(over.dx.data.array.map(\.bitPattern) == fresh.dx.data.array.map(\.bitPattern), "upper \(upper), relu \(relu)")
                #expect(over.dscale.array == fresh.dscale.array && over.dbias.array == fresh.dbias.array)
            }
            // The ReLU's and relu(a + b)'s rules written over dy too.
            let dyb = BlockedTensor(dy, pad: 1)
            let relu = BlockedOps.reluBackward(dy: dyb, y: y)
            let (a, b) = BlockedOps.addReluBackward(dy: dyb, y: y)
            let given = BlockedTensor(dy, pad: 1)
            let (a2, b2) = BlockedOps.addReluBackward(dy: given, y: y, overwrite: true)
            #expect(a2.data.pointer == given.data.pointer && b2.data.pointer != given.data.pointer)
            #expect(a2.data.array == a.data.array && b2.data.array == b.data.array && a.data.array == relu.data.array)
            let again = BlockedTensor(dy, pad: 1)
            let relu2 = BlockedOps.reluBackward(dy: again, y: y, overwrite: true)
            #expect(relu2.data.pointer == again.data.pointer && relu2.data.array == relu.data.array)
        }
    }
}
