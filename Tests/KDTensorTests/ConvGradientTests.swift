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
}
