import Testing

@testable import KDTensor

@Suite("channel gathers on the blocked layout")
struct ChannelGatherTests {
    @Test(
        "every output channel is the named input channel, halos and spare lanes zero, whole blocks and single lanes, in 1 or 2 workers",
        arguments: [1, 2])
    func gathers(threads: Int) throws {
        Parallel.configure(threads: threads)
        defer { Parallel.configure(threads: 1) }
        var rng = RandomSource(seed: 4)
        let (n, h, w) = (3, 5, 7)
        let plainA = Tensor(shape: [n, 19, h, w], values: (0..<(n * 19 * h * w)).map { _ in rng.nextFloat() - 0.5 })
        let plainB = Tensor(shape: [n, 16, h, w], values: (0..<(n * 16 * h * w)).map { _ in rng.nextFloat() - 0.5 })
        // Inputs with different halos; a shuffle of b's two halves, a whole block of a, then a tail.
        let inputs = [BlockedTensor(plainA, pad: 1), BlockedTensor(plainB, pad: 0)]
        var sources = (0..<16).map { j in BlockedTensor.ChannelSource(input: 1, channel: (j % 2) * 8 + j / 2) }
        sources += (8..<16).map { BlockedTensor.ChannelSource(input: 0, channel: $0) }
        sources += [18, 0, 3].map { BlockedTensor.ChannelSource(input: 0, channel: $0) }
        let plains = [plainA, plainB]
        for outPad in [0, 2] {
            let y = try BlockedTensor.gatherChannels(inputs, sources, outPad: outPad)
            #expect(y.shape == [n, sources.count, h, w] && y.pad == outPad)
            let got = y.plain()
            for img in 0..<n {
                for (j, s) in sources.enumerated() {
                    let c = plains[s.input].shape[1]
                    for p in 0..<(h * w) {
                        let want = plains[s.input][(img * c + s.channel) * h * w + p]
                        #expect(got[(img * sources.count + j) * h * w + p] == want, "image \(img) channel \(j) pixel \(p)")
                    }
                }
            }
            // The halo and the lanes past the 27 channels are zero: the whole buffer sums to the
            // sum of the values it holds.
            let held = (0..<got.count).reduce(Float(0)) { $0 + abs(got[$1]) }
            let all = (0..<y.data.count).reduce(Float(0)) { $0 + abs(y.data[$1]) }
            #expect(abs(held - all) <= 1e-3 * max(1, held))
        }
    }

    @Test("inputs of another size and channels past an input's count are refused")
    func refusals() throws {
        let a = BlockedTensor(Tensor(zeros: [1, 8, 4, 4]), pad: 0)
        let b = BlockedTensor(Tensor(zeros: [1, 8, 4, 5]), pad: 0)
        #expect(throws: TensorError.self) { try BlockedTensor.gatherChannels([a, b], [.init(input: 0, channel: 0)], outPad: 0) }
        #expect(throws: TensorError.self) { try BlockedTensor.gatherChannels([a], [.init(input: 0, channel: 8)], outPad: 0) }
        #expect(throws: TensorError.self) { try BlockedTensor.gatherChannels([a], [.init(input: 1, channel: 0)], outPad: 0) }
    }
}
