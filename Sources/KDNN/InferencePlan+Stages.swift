import KDTensor

/// A batch's late layers in slices of more images than its early ones.
///
/// A batch runs in slices, each through the whole network, and a slice holds as many images as
/// keep its largest activation in cache. For a mobile student that is one image (efficientnet-lite0's
/// 144 × 32 × 32 expansion fills the budget, shufflenetv2's 116 × 16 × 16 branches nearly). Its late
/// layers then read their weights once per image, over a 4 × 4 or 8 × 8 map (16 or 64 pixels to a
/// weight read), and every step's fixed cost (gathers, buffers, the channel shuffles) comes once
/// per image too.
///
/// So where one value alone passes from the early layers to the late ones, and the late
/// activations are small enough that several images' fit the budget, the plan cuts the network
/// there. A worker then takes a group of `Stage.images` images: it runs the early layers on them a
/// slice at a time as before, gathers the slices' values at the cut, and runs the late layers on
/// the whole group (with several cuts, each stage in the next one's slices). The groups are
/// independent, so the workers never wait for each other between stages. Every kernel computes an
/// image the same way whatever its slice holds, so the cuts change speed only, never a bit of the
/// result (ZooTests).
extension InferencePlan {
    struct Stage {
        /// The first late step, and the one value the late steps read from the earlier ones.
        let step: Int
        let slot: Int
        /// Images per late slice.
        let images: Int
        /// The slots the late steps write (values a caller asks for must be among them).
        let late: Set<Int>
    }

    /// Floats of a late slice's largest activation as stored (all its images', halos included),
    /// at most: 5/16 of a core's L2 (`lateBudget(l2:)`), 640 KiB where sysfs gives no size.
    static let lateBudget = lateBudget(l2: CacheSizes.l2)

    /// 5/16 of `l2` bytes, in floats: 640 KiB on a 2 MiB L2 (Intel Xeon, family 6, model 207),
    /// 320 KiB on a 1 MiB one (AMD EPYC Zen 4), and no less on a smaller L2, where no budget was
    /// measured (mobilenetv2, efficientnet-lite0 and shufflenetv2 keep their cuts at 320 KiB:
    /// ZooTests). Measured at batch 64 on two threads against no cuts (docs/performance.md,
    /// twelfth session, the Xeon): shufflenetv2 ×1.0, cut before stage 3 (4 images) and its head
    /// (10), 8–10 % faster; cuts on the 16 × 16 maps of mobilenetv2 and efficientnet-lite0 (a
    /// budget twice this one) were slower. On the Zen 4 (nineteenth session) the Xeon's 640 KiB
    /// cut mobilenetv2 ×0.5 on its 16 × 16 maps (5 images), 7–15 % slower than 320 KiB, which
    /// cuts it at features.14 (4 images).
    static func lateBudget(l2: Int?) -> Int {
        guard let l2 else { return 160 << 10 }
        return min(max(l2, 1 << 20), 8 << 20) / 16 * 5 / MemoryLayout<Float>.size
    }

    /// The cuts, in order: from the start (`sliceImages` per slice), the first step after which
    /// one value alone is live, the later steps' largest output (`sizes`, floats per image by step
    /// as stored)
    /// fits the budget `images` times, and `images` is at least 4 and twice the images before it;
    /// then the same again from that cut. A cut leaves a convolution after it (a slice of more
    /// images saves nothing on a pool and a classifier).
    static func stages(slots: Slots, budget: Int, sizes: [Int], convolutions: [Bool], sliceImages: Int, lasting: [Int]) -> [Stage] {
        let count = slots.output.count
        guard count > 1, sizes.count == count, convolutions.count == count else { return [] }
        // Step that writes each slot (−1: the input; nil: a parameter), and the last that reads it.
        var producer = [Int?](repeating: nil, count: slots.names.count)
        producer[slots.input] = -1
        for (i, s) in slots.output.enumerated() { producer[s] = i }
        var last = [Int](repeating: -1, count: slots.names.count)
        for (i, reads) in slots.reads.enumerated() { for s in reads { last[s] = max(last[s], i) } }
        for s in lasting { last[s] = count }
        var largest = [Int](repeating: 0, count: count + 1)
        var convolving = [Bool](repeating: false, count: count + 1)
        for i in stride(from: count - 1, through: 0, by: -1) {
            largest[i] = max(largest[i + 1], sizes[i])
            convolving[i] = convolving[i + 1] || convolutions[i]
        }
        var stages: [Stage] = []
        var before = sliceImages
        for c in 1..<count {
            let images = min(16, budget / max(1, largest[c]))
            guard images >= max(4, 2 * before), convolving[c] else { continue }
            let live = slots.names.indices.filter { s in producer[s].map { $0 < c && last[s] >= c } ?? false }
            guard live.count == 1 else { continue }
            stages.append(Stage(step: c, slot: live[0], images: images, late: Set(slots.output[c...])))
            before = images
        }
        return stages
    }

    /// The first late step's name and the images per late slice, where a batch's late layers run
    /// in larger slices.
    public var lateSlices: [(step: String, images: Int)] { stages.map { (stepNames[$0.step], $0.images) } }

    /// The value of `cuts[k]`'s slot for the images `x` (at most that cut's `images`): the steps
    /// before it run in slices of the images of the cut before it, or of `sliceImages` before
    /// the first cut.
    func value(atCut k: Int, of cuts: [Stage], _ x: Tensor, timing: ((Int, Double) -> Void)?) throws -> SliceValue {
        let (size, start) = k == 0 ? (sliceImages, 0) : (cuts[k - 1].images, cuts[k - 1].step)
        let n = x.shape[0]
        let count = (n + size - 1) / size
        var parts: [(lo: Int, value: SliceValue)] = []
        for i in 0..<count {
            let lo = n * i / count
            let part = count == 1 ? x : Self.images(lo..<n * (i + 1) / count, of: [(0, .plain(x))]).plain
            let entry: (slot: Int, value: SliceValue) =
                k == 0
                ? (slots.input, .plain(slots.quant[slots.input].map { $0.applied(to: part) } ?? part))
                : (cuts[k - 1].slot, try value(atCut: k - 1, of: cuts, part, timing: timing))
            parts.append(
                (lo, try runSteps(start..<cuts[k].step, entry: entry, exits: [cuts[k].slot], timing: timing, batchOfOne: false)[0]))
        }
        return Self.images(0..<n, of: parts)
    }

    /// Images `range` of a batch, from slices' values that hold them in order (`lo`: a slice's first image).
    static func images(_ range: Range<Int>, of parts: [(lo: Int, value: SliceValue)]) -> SliceValue {
        for (lo, value) in parts where lo == range.lowerBound && value.images == range.count { return value }
        switch parts[0].value {
        case .blocked(let first):
            let y = BlockedTensor(uninitialized: range.count, channels: first.channels, h: first.h, w: first.w, pad: first.pad)
            let stride = first.imageStride
            for (lo, value) in parts {
                guard case .blocked(let b) = value else { preconditionFailure("a cut value changed its layout between slices") }
                let from = max(lo, range.lowerBound)
                let to = min(lo + b.n, range.upperBound)
                guard from < to else { continue }
                (y.data.pointer + (from - range.lowerBound) * stride).update(
                    from: b.data.pointer + (from - lo) * stride, count: (to - from) * stride)
            }
            return .blocked(y)
        case .plain(let first):
            let per = first.count / max(1, first.shape[0])
            let y = Tensor(uninitialized: [range.count] + Array(first.shape.dropFirst()))
            for (lo, value) in parts {
                let t = value.plain
                let from = max(lo, range.lowerBound)
                let to = min(lo + t.shape[0], range.upperBound)
                guard from < to else { continue }
                (y.pointer + (from - range.lowerBound) * per).update(from: t.pointer + (from - lo) * per, count: (to - from) * per)
            }
            return .plain(y)
        }
    }
}
