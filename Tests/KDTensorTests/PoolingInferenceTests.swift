import Testing

@testable import KDTensor

@Suite("max pooling, inference path")
struct PoolingInferenceTests {
    @Test(
        "the argmax-free path gives the training path's values (2×2/2 fast path, padding, dilation, ceil mode, NaN)",
        arguments: [
            Window(kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0]),
            Window(kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1]),
            Window(kernel: [2, 3], stride: [1, 2], pads: [0, 1, 0, 1], dilation: [2, 1]),
            Window(kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0], ceilMode: true),
        ])
    func matches(window: Window) throws {
        let x = Tensor(shape: [2, 3, 7, 9], values: (0..<(2 * 3 * 63)).map { Float(($0 * 7919) % 101) / 10 - 5 })
        x[10] = .nan
        let (a, _) = try Pooling.maxForward(x, window)
        let b = try Pooling.maxForwardInference(x, window)
        #expect(a.shape == b.shape)
        for i in 0..<a.count { #expect(a[i] == b[i] || (a[i].isNaN && b[i].isNaN), "element \(i): \(a[i]) vs \(b[i])") }
        #expect((0..<b.count).contains { b[$0].isNaN }, "the NaN propagates")
    }
}
