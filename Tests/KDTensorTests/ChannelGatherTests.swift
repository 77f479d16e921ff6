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

    @Test("channels without a source are zero; adding gathers into a tensor adds those with one and leaves the rest", arguments: [1, 2])
    func holesAndAdding(threads: Int) throws {
        Parallel.configure(threads: threads)
        defer { Parallel.configure(threads: 1) }
        var rng = RandomSource(seed: 8)
        let (n, h, w) = (2, 4, 6)
        func random(_ c: Int) -> Tensor { Tensor(shape: [n, c, h, w], values: (0..<(n * c * h * w)).map { _ in rng.nextFloat() - 0.5 }) }
        let (plainG, plainT) = (random(24), random(20))
        let g = BlockedTensor(plainG, pad: 1)
        // Channel k of the result from channel map[k] of g: a whole block (8..<16 from 0..<8),
        // scattered lanes, a block with no source at all (16..<20) and holes between.
        var map = [Int?](repeating: nil, count: 20)
        for k in 8..<16 { map[k] = k - 8 }
        for (k, j) in [(0, 23), (3, 9), (5, 17)] { map[k] = j }
        let sources = map.map { $0.map { BlockedTensor.ChannelSource(input: 0, channel: $0) } }
        let fresh = try BlockedTensor.gatherChannels([g], sources, outPad: 1)
        let target = BlockedTensor(plainT, pad: 1)
        try BlockedTensor.addGathered([g], sources, into: target)
        let (a, b) = (fresh.plain(), target.plain())
        for img in 0..<n {
            for k in 0..<20 {
                for p in 0..<(h * w) {
                    let i = (img * 20 + k) * h * w + p
                    let from = map[k].map { plainG[(img * 24 + $0) * h * w + p] } ?? 0
                    #expect(a[i] == from, "gathered: image \(img) channel \(k)")
                    #expect(b[i] == plainT[i] + from, "added: image \(img) channel \(k)")
                }
            }
        }
        // The halos stay zero.
        let held = (0..<a.count).reduce(Float(0)) { $0 + abs(a[$1]) }
        #expect(abs(held - (0..<fresh.data.count).reduce(Float(0)) { $0 + abs(fresh.data[$1]) }) <= 1e-3 * max(1, held))
        #expect(throws: TensorError.self) { try BlockedTensor.addGathered([g], Array(sources.dropLast()), into: target) }
    }

    @Test("on the tape, a gather's backward adds each output channel's gradient into its source, twice for a channel taken twice")
    func tapeBackward() throws {
        var rng = RandomSource(seed: 5)
        let (n, h, w) = (2, 3, 4)
        func random(_ c: Int) -> Tensor { Tensor(shape: [n, c, h, w], values: (0..<(n * c * h * w)).map { _ in rng.nextFloat() - 0.5 }) }
        let tape = Tape()
        let a = tape.leaf(random(10), requiresGrad: true)
        let b = tape.leaf(random(6), requiresGrad: true)
        // b's channel 1 twice (once through each of two inputs naming b), a's 9 and 0, b's 5.
        let picks = [(1, 1), (0, 9), (2, 1), (0, 0), (1, 5)]
        let y = try tape.gatherChannels([a, b, b], picks.map { BlockedTensor.ChannelSource(input: $0.0, channel: $0.1) })
        #expect(tape.shape(y) == [n, 5, h, w])
        let seed = random(5)
        try tape.backward([(y, seed)])
        let (ga, gb) = (tape.grad(a)!, tape.grad(b)!)
        for img in 0..<n {
            for p in 0..<(h * w) {
                func s(_ j: Int) -> Float { seed[(img * 5 + j) * h * w + p] }
                for c in 0..<10 {
                    let want: Float = c == 9 ? s(1) : c == 0 ? s(3) : 0
                    #expect(ga[(img * 10 + c) * h * w + p] == want, "a channel \(c)")
                }
                for c in 0..<6 {
                    let want: Float = c == 1 ? s(0) + s(2) : c == 5 ? s(4) : 0
                    #expect(gb[(img * 6 + c) * h * w + p] == want, "b channel \(c)")
                }
            }
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
