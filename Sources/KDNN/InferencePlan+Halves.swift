import Foundation
import KDTensor
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Inverted residual blocks of one image in two halves of their expanded channels.
///
/// A mobile block — a 1 × 1 expansion to E channels, a depthwise convolution, a 1 × 1 projection
/// back (mobilenetv2, efficientnet-lite0) — run as three layers each split over two workers has
/// each core read, in the next layer, much of what the other core wrote: E channels, six times the
/// block's width. On this machine kind a 48 KB read took 5.9 µs when the other core had written it
/// and 0.55 µs when the same core had (docs/performance.md, tenth session). Split by expanded
/// channels instead, each worker takes one half of the E channels through all three layers: its
/// share of the expansion, the depthwise convolution of those channels, and the projection of
/// those channels alone, a partial sum over all output channels. The two partial sums are then
/// added: the only values that cross between the cores are the block's narrow output.
///
/// The halves are fixed by the layer (E/2 rounded to 16 channels), never by the thread count, and
/// the sum is always `(projection of the second half) + (projection of the first half + bias +
/// shortcut)`, so one worker (the halves one after the other, the second one adding the first's
/// result as its residual) and two workers (the halves side by side, then one addition) give the
/// same bits. Batches of more than one image keep the blocks whole: each worker there takes whole
/// images, and the two partial sums would cost one worker an extra pass over the output. An image's
/// outputs at batch 1 and inside a larger batch may therefore differ in their last bits.
extension InferencePlan {
    /// One block's halves: the steps `first`, `first + 1` and `first + 2` of the plan (expansion,
    /// depthwise, projection) as two chains of the same three kernels over half the channels.
    struct HalvedBlock: @unchecked Sendable {
        /// A 1 × 1 convolution on the kernel its whole layer runs on.
        enum OneByOne {
            case direct(DirectConv)
            case rows(PackedLinear)

            /// Like the `.direct` and `.pointwise` steps: `epilogue`'s residual added, then its
            /// activation, the output blocked with halo `outPad`.
            func callAsFunction(_ x: BlockedTensor, _ epilogue: Epilogue, outPad: Int) throws -> BlockedTensor {
                switch self {
                case .direct(let conv): try conv(x, epilogue, outPad: outPad)
                case .rows(let op):
                    try InferencePlan.pointwise(x, op, Epilogue(epilogue.function), residual: epilogue.residual, outPad: outPad)
                }
            }

            /// The same kind of kernel for `weight` [O, C, 1, 1].
            func like(_ weight: Tensor, bias: Tensor?) -> OneByOne {
                switch self {
                case .direct(let conv):
                    .direct(DirectConv(weight: weight, bias: bias, window: conv.window, inBlock: 8, winograd: false))
                case .rows:
                    .rows(PackedLinear(weight: Tensor(shape: [weight.shape[0], weight.shape[1]], values: weight.array), bias: bias))
                }
            }
        }

        struct Half {
            let expand: OneByOne
            let depthwise: Depthwise.BlockedFilters
            let project: OneByOne
        }

        let first: Int
        let halves: [Half]
        let expandFunction: Epilogue.Function?
        let window: Window
        let depthwiseFunction: Epilogue.Function?
        /// Whether the projection adds a shortcut (its step's second read).
        let residual: Bool
        /// Whether the block at `first + 3` runs in halves too and reads this block's output alone
        /// (as its input, and as its shortcut where it has one), nothing else reading it.
        var continues = false

        /// The output of half `j`: expansion, depthwise convolution, projection with `residual`
        /// added. `mark(k)` is called on the calling thread as phase k (0, 1, 2) ends.
        func chain(
            _ j: Int, _ x: BlockedTensor, residual: BlockedTensor?, pads: (Int, Int, Int), mark: ((Int) -> Void)?
        ) throws -> BlockedTensor {
            let half = halves[j]
            let e = try half.expand(x, Epilogue(expandFunction), outPad: pads.0)
            mark?(0)
            let d = try Depthwise.blocked(e, filters: half.depthwise, window, Epilogue(depthwiseFunction), outPad: pads.1)
            mark?(1)
            let y = try half.project(d, Epilogue(nil, residual: residual), outPad: pads.2)
            mark?(2)
            return y
        }

        /// The block's output for input `x` and shortcut `shortcut`; `pads` are the halos of the
        /// expansion's, the depthwise convolution's and the block's outputs.
        func run(_ x: BlockedTensor, shortcut: BlockedTensor?, pads: (Int, Int, Int), mark: ((Int) -> Void)?) throws -> BlockedTensor {
            let threads = Parallel.threads
            // Two or three workers: one half each, on one thread. One worker, or four and more:
            // the halves in turn, each split over all of them.
            guard threads == 2 || threads == 3 else {
                let first = try chain(0, x, residual: shortcut, pads: pads, mark: mark)
                return try chain(1, x, residual: first, pads: pads, mark: mark)
            }
            var outputs = [BlockedTensor?](repeating: nil, count: 2)
            var failure: Error?
            let lock = NSLock()
            outputs.withUnsafeMutableBufferPointer { buffer in
                let out = UncheckedSendable(buffer)
                Parallel.chunks(2, parts: 2) { j, _ in
                    Parallel.configure(threads: 1)
                    defer { Parallel.configure(threads: threads) }
                    do {
                        out.value[j] = try chain(j, x, residual: j == 0 ? shortcut : nil, pads: pads, mark: j == 0 ? mark : nil)
                    } catch {
                        lock.lock()
                        failure = failure ?? error
                        lock.unlock()
                    }
                }
            }
            if let failure { throw failure }
            return try BlockedTensor.add(outputs[1]!, outputs[0]!, relu: false)
        }
    }

    /// Two workers reaching a point of a parallel region together (`wait(k)` at the k-th point,
    /// k = 1, 2, …), spinning (`SpinWait`); `breakDown` releases a waiting worker when the other
    /// has failed.
    final class SpinBarrier: Sendable {
        private let arrived = Atomic<Int>(0)
        private let broken = Atomic<Bool>(false)

        /// False when the region broke down.
        func wait(_ k: Int) -> Bool {
            arrived.add(1, ordering: .acquiringAndReleasing)
            var wait = SpinWait()
            while arrived.load(ordering: .acquiring) < 2 * k {
                if broken.load(ordering: .relaxed) { return false }
                wait.spin()
            }
            return !broken.load(ordering: .relaxed)
        }

        func breakDown() { broken.store(true, ordering: .releasing) }
    }
}

extension InferencePlan.HalvedBlock {
    /// Consecutive blocks `run` (each `continues` to the next) on two workers in one parallel
    /// region: each worker takes its half of every block, and after each block both wait for
    /// each other and each adds the two partial sums itself (`second + first`, as `run(_:…)`
    /// adds them, so the bits are the same), so the blocks cost one fork and join in all rather
    /// than one each (docs/performance.md, twelfth session). `pads` are each block's halos.
    static func region(
        _ run: [Self], _ x: BlockedTensor, shortcut: BlockedTensor?, pads: [(Int, Int, Int)]
    ) throws -> BlockedTensor {
        let threads = Parallel.threads
        let barrier = InferencePlan.SpinBarrier()
        // Both workers' partial sums of every block, and each worker's last output.
        var partials = [BlockedTensor?](repeating: nil, count: 2 * run.count)
        var outputs = [BlockedTensor?](repeating: nil, count: 2)
        var failure: Error?
        let lock = NSLock()
        partials.withUnsafeMutableBufferPointer { partials in
            outputs.withUnsafeMutableBufferPointer { outputs in
                let (shared, out) = (UncheckedSendable(partials), UncheckedSendable(outputs))
                Parallel.chunks(2, parts: 2) { j, _ in
                    Parallel.configure(threads: 1)
                    defer { Parallel.configure(threads: threads) }
                    do {
                        var y = x
                        for (k, block) in run.enumerated() {
                            let first = k == 0 ? shortcut : (block.residual ? y : nil)
                            shared.value[2 * k + j] = try block.chain(j, y, residual: j == 0 ? first : nil, pads: pads[k], mark: nil)
                            guard barrier.wait(k + 1) else { return }
                            y = try BlockedTensor.add(shared.value[2 * k + 1]!, shared.value[2 * k]!, relu: false)
                        }
                        out.value[j] = y
                    } catch {
                        lock.lock()
                        failure = failure ?? error
                        lock.unlock()
                        barrier.breakDown()
                    }
                }
            }
        }
        if let failure { throw failure }
        return outputs[0]!
    }
}

extension InferencePlan {
    /// The blocks of `steps` that run in halves at batch 1, by their first step: an expansion (a
    /// 1 × 1 `.direct` or `.pointwise` step with no residual) whose output only the next step
    /// reads, a blocked depthwise `.conv` whose output only the projection reads, and a 1 × 1
    /// projection with no activation; none of the three outputs kept, quantized or a graph output.
    /// `weights` holds each 1 × 1 step's folded weight and bias by output name.
    static func halvedBlocks(
        _ steps: [Step], weights: [String: (Tensor, Tensor?)], model: Model, keep: Set<String>
    ) -> [Int: HalvedBlock] {
        var readers: [String: Int] = [:]
        for step in steps { for name in Set(step.reads) { readers[name, default: 0] += 1 } }
        let fixed = Set(model.graph.outputs).union(keep)
        func internalValue(_ name: String) -> Bool {
            readers[name] == 1 && !fixed.contains(name) && model.activationQuant[name] == nil
        }
        /// A 1 × 1 step's input, kernel, activation, residual and output.
        func oneByOne(_ step: Step) -> (String, HalvedBlock.OneByOne, Epilogue.Function?, String?, String)? {
            switch step {
            case .direct(let input, let conv, let f, let residual, let output) where conv.readsWithoutHalo:
                (input, .direct(conv), f, residual, output)
            case .pointwise(let input, let op, let f, let residual, let output): (input, .rows(op), f, residual, output)
            default: nil
            }
        }
        var blocks: [Int: HalvedBlock] = [:]
        var i = 0
        while i + 2 < steps.count {
            defer { i += 1 }
            guard let (_, expandOp, f1, r1, e) = oneByOne(steps[i]), r1 == nil, internalValue(e),
                case .conv(let dwInput, let dwWeight, let dwBias, let window, let groups, let f2, let d) = steps[i + 1], dwInput == e,
                dwWeight.rank == 4, dwWeight.shape[1] == 1, groups == dwWeight.shape[0], internalValue(d),
                let (projectInput, projectOp, f3, shortcut, y) = oneByOne(steps[i + 2]), projectInput == d, f3 == nil,
                model.activationQuant[y] == nil,
                let (we, be) = weights[e], let (wp, bp) = weights[y]
            else { continue }
            let channels = groups
            // Equal halves, on 8-channel block boundaries.
            let split = channels / 16 * 8
            guard channels % 8 == 0, split > 0, split < channels, we.shape[0] == channels, wp.shape[1] == channels else { continue }
            let c = we.shape[1]
            let taps = dwWeight.shape[2] * dwWeight.shape[3]
            let outputs = wp.shape[0]
            let halves = [0..<split, split..<channels].enumerated().map { j, r in
                let expandWeight = Tensor(shape: [r.count, c, 1, 1], values: Array(we.array[(r.lowerBound * c)..<(r.upperBound * c)]))
                let expandBias = be.map { Tensor(shape: [r.count], values: Array($0.array[r])) }
                let dw = Depthwise.BlockedFilters(
                    weight: Tensor(
                        shape: [r.count, 1] + Array(dwWeight.shape[2...]),
                        values: Array(dwWeight.array[(r.lowerBound * taps)..<(r.upperBound * taps)])),
                    bias: dwBias.map { Tensor(shape: [r.count], values: Array($0.array[r])) })
                let wpa = wp.array
                let projectWeight = Tensor(
                    shape: [outputs, r.count, 1, 1],
                    values: (0..<outputs).flatMap { o in wpa[(o * channels + r.lowerBound)..<(o * channels + r.upperBound)] })
                // The bias goes with the first half (and the shortcut): the second half's sum starts at 0.
                return HalvedBlock.Half(
                    expand: expandOp.like(expandWeight, bias: expandBias), depthwise: dw,
                    project: projectOp.like(projectWeight, bias: j == 0 ? bp : nil))
            }
            blocks[i] = HalvedBlock(
                first: i, halves: halves, expandFunction: f1, window: window, depthwiseFunction: f2, residual: shortcut != nil)
            i += 2
        }
        // A block continues into the next when the next reads its output as input (and shortcut)
        // and no other step reads it.
        for i in blocks.keys {
            guard let next = blocks[i + 3] else { continue }
            let y = steps[i + 2].output
            if steps[i + 3].reads[0] == y, !next.residual || steps[i + 5].reads[1] == y, readers[y] == (next.residual ? 2 : 1),
                !fixed.contains(y)
            {
                blocks[i]!.continues = true
            }
        }
        return blocks
    }
}
