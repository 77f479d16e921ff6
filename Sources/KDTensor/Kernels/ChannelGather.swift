/// Channel selection, concatenation and permutation on the channel-blocked layout in one pass: a
/// ShuffleNet unit's concat → channel shuffle → split is a gather of channels from the branches'
/// outputs, copied once instead of through NCHW copies of each step.
extension BlockedTensor {
    /// One output channel's origin: channel `channel` of input `input`.
    public struct ChannelSource: Equatable, Sendable {
        public var input: Int
        public var channel: Int
        public init(input: Int, channel: Int) {
            self.input = input
            self.channel = channel
        }
    }

    /// Output channel j is channel `sources[j].channel` of `inputs[sources[j].input]`; every input
    /// has the output's batch and map size. The output has a zero halo of `outPad` and zero lanes
    /// past its channels.
    public static func gatherChannels(_ inputs: [BlockedTensor], _ sources: [ChannelSource], outPad: Int) throws -> BlockedTensor {
        try gatherChannels(inputs, sources.map { Optional($0) }, outPad: outPad)
    }

    /// The same, where an output channel without a source is zero (the backward of a gather: a
    /// gradient holds the channels that were gathered from it, and zeros).
    public static func gatherChannels(_ inputs: [BlockedTensor], _ sources: [ChannelSource?], outPad: Int) throws -> BlockedTensor {
        guard let first = inputs.first, !sources.isEmpty else { throw TensorError("gather: no inputs or no channels") }
        let y = BlockedTensor(uninitialized: first.n, channels: sources.count, h: first.h, w: first.w, pad: outPad, zeroHalo: false)
        try gather(inputs, sources, into: y, add: false)
        return y
    }

    /// `target`'s channel j += channel `sources[j].channel` of `inputs[sources[j].input]`, for the
    /// channels with a source (the others, the halo and the spare lanes are left as they are).
    public static func addGathered(_ inputs: [BlockedTensor], _ sources: [ChannelSource?], into target: BlockedTensor) throws {
        guard sources.count == target.channels else {
            throw TensorError("gather: \(sources.count) sources for \(target.channels) channels")
        }
        try gather(inputs, sources, into: target, add: true)
    }

    private static func gather(_ inputs: [BlockedTensor], _ sources: [ChannelSource?], into y: BlockedTensor, add: Bool) throws {
        guard let first = inputs.first, !sources.isEmpty else { throw TensorError("gather: no inputs or no channels") }
        for x in inputs + [y] where x.n != first.n || x.h != first.h || x.w != first.w {
            throw TensorError("gather: inputs \(first.shape) and \(x.shape) differ in batch or map size")
        }
        for case let s? in sources where !(0..<inputs.count).contains(s.input) || !(0..<inputs[s.input].channels).contains(s.channel) {
            throw TensorError("gather: no channel \(s.channel) in input \(s.input)")
        }
        let (n, h, w) = (first.n, first.h, first.w)
        // Per output lane: where its channel's plane starts in image 0, and that input's row and
        // image strides; lanes without a source read nothing.
        struct Lane {
            var base: UnsafePointer<Float>?
            var row = 0
            var image = 0
        }
        var lanes = [Lane](repeating: Lane(), count: y.blocks * 8)
        for (j, s) in sources.enumerated() {
            guard let s else { continue }
            let x = inputs[s.input]
            lanes[j] = Lane(
                base: UnsafePointer(x.origin + (s.channel / 8) * x.planeStride + s.channel % 8), row: x.rowStride, image: x.imageStride)
        }
        // A block whose eight lanes are one input's block in order is copied (or added) a row at a
        // time; a block without sources is zeroed, or left alone when adding.
        enum Kind { case whole, lanes, none }
        let kinds: [Kind] = (0..<y.blocks).map { b in
            let whole = (0..<8).allSatisfy { l in
                let (a, z) = (lanes[b * 8], lanes[b * 8 + l])
                return a.base != nil && z.base == a.base.map { $0 + l } && z.row == a.row && z.image == a.image
            }
            return whole ? .whole : (0..<8).contains { lanes[b * 8 + $0].base != nil } ? .lanes : .none
        }
        let blocks = y.blocks
        let zeroRow = Tensor(zeros: [w * 8])
        let zeros = UnsafePointer(zeroRow.pointer)
        lanes.withUnsafeBufferPointer { lanes in
            kinds.withUnsafeBufferPointer { kinds in
                Parallel.chunks(n * blocks, parts: n * blocks * h * w >= 4096 ? Parallel.threads : 1) { _, range in
                    for u in range {
                        let (img, b) = (u / blocks, u % blocks)
                        if !add { y.zeroHalo(plane: u) }
                        let plane = y.origin + img * y.imageStride + b * y.planeStride
                        switch kinds[b] {
                        case .none:
                            if !add { for i in 0..<h { (plane + i * y.rowStride).update(repeating: 0, count: w * 8) } }
                        case .whole:
                            let l = lanes[b * 8]
                            for i in 0..<h {
                                let (d, s) = (plane + i * y.rowStride, l.base! + img * l.image + i * l.row)
                                if add {
                                    for o in stride(from: 0, to: w * 8, by: 8) { (SIMD8.load(d + o) + SIMD8.load(s + o)).store(d + o) }
                                } else {
                                    d.update(from: s, count: w * 8)
                                }
                            }
                        case .lanes:
                            // Pixel by pixel, eight source rows at once (lanes without a source
                            // read a row of zeros), one vector stored per pixel.
                            for i in 0..<h {
                                var src = InlineArray<8, UnsafePointer<Float>>(repeating: zeros)
                                for l in 0..<8 {
                                    let lane = lanes[b * 8 + l]
                                    if let base = lane.base { src[l] = base + img * lane.image + i * lane.row }
                                }
                                let d = plane + i * y.rowStride
                                for j in 0..<w {
                                    let o = j * 8
                                    let v = SIMD8<Float>(
                                        src[0][o], src[1][o], src[2][o], src[3][o], src[4][o], src[5][o], src[6][o], src[7][o])
                                    (add ? SIMD8.load(d + o) + v : v).store(d + o)
                                }
                            }
                        }
                    }
                }
            }
        }
        withExtendedLifetime(zeroRow) {}
    }
}
