import Testing

@testable import KDTensor

@Suite("Convolution paths agree")
struct ConvPathTests {
    /// The shifted-GEMM kernel and im2col sum the same products in a different order: 1e-4 of the
    /// output scale is float32 reordering, not a different result.
    static let tolerance: Float = 1e-4

    struct Case: CustomStringConvertible, Sendable {
        let x: [Int]
        let w: [Int]
        let pads: [Int]
        var description: String { "x\(x) w\(w) pads\(pads)" }
    }

    static let cases = [
        Case(x: [3, 4, 7, 7], w: [5, 4, 3, 3], pads: [1, 1, 1, 1]),
        Case(x: [2, 3, 9, 6], w: [4, 3, 5, 5], pads: [2, 2, 2, 2]),
        Case(x: [2, 2, 8, 5], w: [3, 2, 3, 2], pads: [2, 0, 1, 1]),
        Case(x: [5, 6, 4, 4], w: [8, 6, 3, 3], pads: [0, 0, 0, 0]),
    ]

    func close(_ a: Tensor, _ b: Tensor) -> Bool {
        let scale = max(1, b.array.map(abs).max() ?? 1)
        return a.shape == b.shape && (0..<a.count).allSatisfy { abs(a[$0] - b[$0]) <= Self.tolerance * scale }
    }

    @Test("forward, input and weight gradients: shifted GEMMs match im2col", arguments: cases)
    func agree(c: Case) throws {
        var rng = RandomSource(seed: 9)
        let x = Tensor(shape: c.x, values: (0..<c.x.reduce(1, *)).map { _ in rng.nextFloat() - 0.5 })
        let w = Tensor(shape: c.w, values: (0..<c.w.reduce(1, *)).map { _ in rng.nextFloat() - 0.5 })
        let b = Tensor(shape: [c.w[0]], values: (0..<c.w[0]).map { _ in rng.nextFloat() })
        let g = Window(kernel: [c.w[2], c.w[3]], stride: [1, 1], pads: c.pads)
        var results: [(Tensor, Tensor?, Tensor)] = []
        for shifted in [false, true] {
            let y = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: 1, allowFast: shifted)
            let dy = Tensor(shape: y.shape, values: (0..<y.count).map { Float(($0 * 7) % 11) / 11 - 0.5 })
            let grads = Conv2d.backward(dy: dy, x: x, weight: w, hasBias: true, g, groups: 1, needInput: true, allowFast: shifted)
            results.append((y, grads.dx, grads.dw))
        }
        #expect(close(results[1].0, results[0].0), "forward")
        #expect(close(results[1].1!, results[0].1!), "input gradient")
        #expect(close(results[1].2, results[0].2), "weight gradient")
    }
}
