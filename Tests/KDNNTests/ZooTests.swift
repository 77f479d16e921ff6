import KDBundle
import KDTensor
import Testing

@testable import KDNN

@Suite("Architecture zoo")
struct ZooTests {
    func model(_ name: String, _ input: [Int], classes: Int = 10, configure: (inout Architecture) -> Void = { _ in }) throws -> Model {
        var a = try Architecture(name: name)
        configure(&a)
        return try a.build(input: input, classes: classes, seed: 1)
    }

    @Test("parameter counts match the reference architectures (ANCHORS.md)")
    func counts() throws {
        #expect(try model("lenet5", [1, 28, 28]).parameterCount == 61_706)
        #expect(try model("mlp", [1, 28, 28]).parameterCount == 1_276_810)
        #expect(try model("resnet8", [1, 28, 28]).parameterCount == 77_754)
        #expect(try model("resnet20", [3, 32, 32]).parameterCount == 272_474)
    }

    @Test("every architecture runs forward to [N, classes]", arguments: Architecture.Kind.allCases)
    func forward(kind: Architecture.Kind) throws {
        let m = try model(kind.rawValue, [1, 16, 16], classes: 7) {
            $0.width = kind == .mlp ? 1 : 0.5
            $0.hidden = [12]
        }
        let x = Tensor(shape: [3, 1, 16, 16], repeating: 0.5)
        #expect(try m.predict(x).shape == [3, 7])
    }

    @Test("option-A shortcuts are frozen identity projections and keep the output shape")
    func shortcutA() throws {
        let m = try model("resnet14", [3, 16, 16]) {
            $0.shortcut = .a
            $0.width = 0.5
        }
        #expect(!m.frozen.isEmpty)
        #expect(m.frozen.allSatisfy { !m.trainableNames.contains($0) })
        #expect(try m.predict(Tensor(shape: [2, 3, 16, 16], repeating: 1)).shape == [2, 10])
        let b = try model("resnet14", [3, 16, 16]) { $0.width = 0.5 }
        #expect(m.parameterCount < b.parameterCount, "option A adds no trainable projection")
    }

    @Test("FSP pairs and hints name real nodes, and the bundle accepts them")
    func fspAndHints() throws {
        let m = try model("resnet20", [3, 32, 32])
        #expect(m.fspPairs?.pairs.count == 3)
        #expect(m.hints?.hints.first == "stage2.block3.relu2")
        let bundle = try ModelBundle(bytes: BundleWriter.encode(m.contents()))
        #expect(try bundle.fspPairs() == m.fspPairs)
        #expect(try bundle.hints() == m.hints)
    }

    @Test("the same seed gives the same weights; another seed does not")
    func seeds() throws {
        let a = try model("lenet5", [1, 28, 28]).contents()
        let b = try model("lenet5", [1, 28, 28]).contents()
        let c = try Architecture(.lenet5).build(input: [1, 28, 28], classes: 10, seed: 2).contents()
        #expect(a == b)
        #expect(a.tensors != c.tensors)
    }

    @Test("a model survives the bundle round trip exactly, outputs included")
    func roundTrip() throws {
        let m = try model("resnet8", [1, 12, 12]) { $0.width = 0.5 }
        m.labels = Labels((0..<10).map { "c\($0)" })
        let b = try ModelBundle(bytes: BundleWriter.encode(m.contents()))
        let back = try Model(bundle: b)
        #expect(back.graph == m.graph)
        #expect(back.parameters.keys.sorted() == m.parameters.keys.sorted())
        #expect(back.buffers.keys.sorted() == m.buffers.keys.sorted())
        let x = Tensor(shape: [2, 1, 12, 12], values: (0..<288).map { Float($0 % 17) / 17 })
        #expect(try back.predict(x).array == m.predict(x).array)
        #expect(try BundleWriter.encode(back.contents()) == BundleWriter.encode(m.contents()))
    }

    @Test("unknown architectures and bad shapes are errors that say what is allowed")
    func errors() throws {
        #expect(throws: NNError.self) { try Architecture(name: "vgg") }
        #expect(throws: NNError.self) { try Architecture(.lenet5).build(input: [1, 8, 8], classes: 10, seed: 0) }
        let m = try model("mlp", [1, 8, 8]) { $0.hidden = [4] }
        let e = #expect(throws: NNError.self) { try m.predict(Tensor(zeros: [2, 1, 9, 9])) }
        #expect(e?.description.contains("[2, 1, 9, 9]") == true)
    }
}

@Suite("Inference plan")
struct InferencePlanTests {
    /// Folding batch norm into convolutions reorders float operations: agreement to 1e-4 of the
    /// output scale is what float32 gives.
    static let tolerance: Float = 1e-4

    /// `resnet8@14`: 14×14 inputs, so the last stage is 4×4 after a 7×7 one (Winograd tiles
    /// that hang over the edge, activations with a halo of 3 for F(4×4, 3×3) on 14 × 14).
    @Test(
        "folded and fused inference matches the plain forward pass",
        arguments: ["resnet8", "lenet5", "mlp", "fitnet-thin", "resnet14", "resnet8@14"])
    func matches(argument: String) throws {
        let name = String(argument.split(separator: "@")[0])
        let side = argument.contains("@") ? Int(argument.split(separator: "@")[1])! : 16
        var a = try Architecture(name: name)
        a.width = 0.5
        a.hidden = [16]
        if name == "resnet14" { a.shortcut = .a }
        let m = try a.build(input: [1, side, side], classes: 10, seed: 2)
        // Non-trivial running statistics, so folding has something to fold.
        var rng = RandomSource(seed: 5)
        for (_, t) in m.buffers {
            for i in 0..<t.count { t[i] = t.shape.count == 1 && t[i] == 1 ? 0.5 + rng.nextFloat() : rng.nextFloat() - 0.5 }
        }
        // 40 images: more than one slice, so the workers split the batch.
        let x = Tensor(shape: [40, 1, side, side], values: (0..<(40 * side * side)).map { _ in rng.nextFloat() })
        let plain = try m.predict(x)
        let plan = try InferencePlan(m)
        #expect(plan.sliceImages < 40)
        #expect(plan.halo == (["lenet5": 0, "mlp": 0][name] ?? (side == 14 ? 3 : 1)), "\(argument)")
        if name == "lenet5" {
            // The pool after the first convolution fuses into it (pixel kernel, AVX-512 builds),
            // and fc1 reads pool2's blocked output through permuted weight columns.
            #expect(plan.stepNames.contains("conv1+relu1+pool1") == VectorUnits.wide, "\(plan.stepNames)")
            #expect(plan.stepNames.contains("flatten+fc1+relu3"), "\(plan.stepNames)")
        }
        let fused = try plan.run(x)
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        #expect(try plan.run(x).array == fused.array, "\(argument): two workers give other bits than one")
        let scale = max(1, plain.array.map(abs).max()!)
        for i in 0..<plain.count { #expect(abs(plain[i] - fused[i]) <= Self.tolerance * scale, "\(argument) element \(i)") }
    }

    /// At batch 1 the workers split each layer rather than the batch: rows, channel blocks (the
    /// depthwise kernel, the 4 × 4 pointwise layers' gather and scatter, global pooling) or
    /// output channels (1 × 1 layers with more channels than pixels, mobilenetv2's 8 × 8 ones);
    /// inverted residual blocks run in halves of their expanded channels, one half per worker on
    /// two or three workers and the halves in turn otherwise.
    @Test("one image on two workers gives the bits of one worker", arguments: ["mobilenetv2", "efficientnet-lite0", "shufflenetv2"])
    func singleImageThreads(name: String) throws {
        let m = try Architecture(name: name).build(input: [3, 32, 32], classes: 10, seed: 4)
        var rng = RandomSource(seed: 9)
        let x = Tensor(shape: [1, 3, 32, 32], values: (0..<3072).map { _ in rng.nextFloat() - 0.5 })
        let plan = try InferencePlan(m)
        // Every block with an expansion: mobilenetv2's 16, efficientnet-lite0's 15, none in shufflenetv2.
        #expect(plan.halved.compactMap { $0 }.count == ["mobilenetv2": 16, "efficientnet-lite0": 15, "shufflenetv2": 0][name]!, "\(name)")
        // Consecutive blocks run in one parallel region on two or three workers: mobilenetv2's 16
        // in a row, efficientnet-lite0's 15 in a row, each but the last continuing into the next.
        let continuing = plan.halved.compactMap { $0 }.filter(\.continues).count
        #expect(continuing == ["mobilenetv2": 15, "efficientnet-lite0": 14, "shufflenetv2": 0][name]!, "\(name)")
        Parallel.configure(threads: 1)
        let one = try plan.run(x).array.map(\.bitPattern)
        defer { Parallel.configure(threads: 1) }
        for threads in [3, 4, 2] {
            Parallel.configure(threads: threads)
            #expect(try plan.run(x).array.map(\.bitPattern) == one, "\(name), \(threads) workers")
        }
        #expect(one.contains { $0 != 0 })
        // Steps run on the calling thread alone (as `tuneThreads` may choose) change no bit either.
        plan.setSoloSteps(plan.stepNames.indices.map { $0 % 3 != 1 })
        #expect(plan.soloStepNames.count == plan.stepNames.indices.filter { $0 % 3 != 1 }.count)
        #expect(try plan.run(x).array.map(\.bitPattern) == one, "\(name), some steps alone")
        let tuning = try plan.tuneThreads(x, rounds: 2)
        #expect(tuning.steps == plan.stepNames.count && tuning.soloSteps == plan.soloStepNames)
        #expect(try plan.run(x).array.map(\.bitPattern) == one, "\(name), tuned")
    }

    /// `name` at width 0.5 on 32 × 32 inputs, its batch-norm statistics drawn from `statistics`
    /// (variances in [0.5, 1.5), the rest in [−0.5, 0.5)).
    static func halfWidth(_ name: String, seed: UInt64, statistics rng: inout RandomSource) throws -> Model {
        var a = try Architecture(name: name)
        a.width = 0.5
        let m = try a.build(input: [3, 32, 32], classes: 10, seed: seed)
        for (_, t) in m.buffers {
            for i in 0..<t.count { t[i] = t.shape.count == 1 && t[i] == 1 ? 0.5 + rng.nextFloat() : rng.nextFloat() - 0.5 }
        }
        return m
    }

    /// A batch of one runs the blocks in halves (two partial sums of the projection); a batch of
    /// several keeps them whole. The two agree within rounding.
    @Test(
        "a batch of one runs inverted residual blocks in halves, within rounding of whole blocks",
        arguments: ["mobilenetv2", "efficientnet-lite0"])
    func halvedBlocks(name: String) throws {
        // Non-trivial running statistics, so that the folded biases (on the first half only) matter.
        var rng = RandomSource(seed: 2)
        let m = try Self.halfWidth(name, seed: 6, statistics: &rng)
        let x = Tensor(shape: [2, 3, 32, 32], values: (0..<6144).map { _ in rng.nextFloat() - 0.5 })
        let first = Tensor(shape: [1, 3, 32, 32], values: Array(x.array[0..<3072]))
        let plan = try InferencePlan(m)
        #expect(plan.halved.contains { $0 != nil })
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        let halves = try plan.run(first).array
        let whole = Array(try plan.run(x).array[0..<10])
        #expect(halves.map(\.bitPattern) != whole.map(\.bitPattern), "\(name): the halves changed no bit (did they run?)")
        let plain = Array(try m.predict(x).array[0..<10])
        let scale = max(1, plain.map(abs).max()!)
        for i in 0..<10 {
            #expect(abs(halves[i] - whole[i]) <= Self.tolerance * scale, "\(name) logit \(i)")
            #expect(abs(halves[i] - plain[i]) <= Self.tolerance * scale, "\(name) logit \(i) against the tape")
        }
    }

    @Test(
        "the classifier head (global pool, flatten, dropout, linear) runs as one step, with the bits of the four",
        arguments: [("efficientnet-lite0", "avgpool+flatten+classifier.0+classifier.1"), ("shufflenetv2", "avgpool+flatten+fc")])
    func pooledHead(name: String, step: String) throws {
        var rng = RandomSource(seed: 9)
        let m = try Self.halfWidth(name, seed: 8, statistics: &rng)
        let plan = try InferencePlan(m)
        #expect(plan.stepNames.contains(step), "\(plan.stepNames.suffix(3))")
        // Keeping the pooled value leaves the four nodes unfused.
        let pool = try #require(m.order.first { $0.op == .globalavgpool }).outputs[0]
        let apart = try InferencePlan(m, keep: [pool])
        #expect(!apart.stepNames.contains(step))
        let x = Tensor(shape: [3, 3, 32, 32], values: (0..<(3 * 3072)).map { _ in rng.nextFloat() - 0.5 })
        let y = try plan.run(x)
        #expect(y.array.map(\.bitPattern) == (try apart.run(x)).array.map(\.bitPattern))
        let want = try m.predict(x)
        let scale = max(1, want.array.map(abs).max()!)
        #expect(zip(want.array, y.array).allSatisfy { abs($0 - $1) <= Self.tolerance * scale })
    }

    @Test("the late slices' budget is 5/16 of the L2: the Xeon's 640 KiB on 2 MiB, 320 KiB on 1 MiB or less")
    func lateBudget() {
        #expect(InferencePlan.lateBudget(l2: 2 << 20) == 160 << 10)
        #expect(InferencePlan.lateBudget(l2: 1 << 20) == 80 << 10)
        #expect(InferencePlan.lateBudget(l2: nil) == 160 << 10)
        #expect(InferencePlan.lateBudget(l2: 512 << 10) == 80 << 10)
        #expect(InferencePlan.lateBudget(l2: 1 << 30) == InferencePlan.lateBudget(l2: 8 << 20))
        #expect(InferencePlan.lateBudget == InferencePlan.lateBudget(l2: CacheSizes.l2))
    }

    @Test(
        "a batch's late layers run in slices of more images, with the bits of slices of one",
        arguments: ["mobilenetv2", "efficientnet-lite0", "shufflenetv2"])
    func lateSlices(name: String) throws {
        var rng = RandomSource(seed: 5)
        let m = try Self.halfWidth(name, seed: 4, statistics: &rng)
        let plan = try InferencePlan(m)
        #expect(!plan.lateSlices.isEmpty, "\(name): no cut")
        #expect(plan.lateSlices.allSatisfy { $0.images >= 4 })
        let reference = try InferencePlan(m, lateSlices: false)
        #expect(reference.lateSlices.isEmpty)
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        // 37 images, at least two groups for every cut: early slices and late ones end at
        // different images.
        let x = Tensor(shape: [37, 3, 32, 32], values: (0..<(37 * 3072)).map { _ in rng.nextFloat() - 0.5 })
        #expect(plan.lateSlices.allSatisfy { 37 >= 2 * $0.images })
        let staged = try plan.run(x)
        #expect(staged.shape == [37, 10])
        #expect(staged.array.map(\.bitPattern) == (try reference.run(x)).array.map(\.bitPattern), "\(name)")
        // Timing steps runs the same schedule, each worker timing its own steps: the same bits
        // again, every step reported once (on the calling thread), and the steps' times, each
        // summed over the two workers and halved, within the pass's wall time.
        var steps: [Int: Double] = [:]
        let start = ContinuousClock.now
        #expect((try plan.run(x, timing: { i, s in steps[i, default: 0] += s })).array.map(\.bitPattern) == staged.array.map(\.bitPattern))
        let wall = start.duration(to: .now)
        #expect(steps.count == plan.stepNames.count)
        let total = steps.values.reduce(0, +)
        #expect(total > 0 && total <= Double(wall.components.seconds) + Double(wall.components.attoseconds) * 1e-18)
        // A batch of fewer than two groups runs in the usual slices, on both workers.
        let few = Tensor(shape: [3, 3, 32, 32], values: Array(x.array[0..<(3 * 3072)]))
        #expect(try plan.run(few).array.map(\.bitPattern) == Array(staged.array[0..<30]).map(\.bitPattern))
    }

    @Test(
        "a training step with batch norm + ReLU (or ReLU6) and batch norm + add + ReLU fused gives the bits of the unfused one",
        arguments: ["resnet8", "resnet14", "fitnet-thin", "lenet5", "mobilenetv2", "efficientnet-lite0", "shufflenetv2"])
    func fusedStep(name: String) throws {
        var a = try Architecture(name: name)
        a.width = 0.5
        let m = try a.build(input: [3, 16, 16], classes: 10, seed: 1)
        var rng = RandomSource(seed: 3)
        let x = Tensor(shape: [4, 3, 16, 16], values: (0..<(4 * 768)).map { _ in rng.nextFloat() })
        func step(_ fusing: Set<String>?) throws -> (Tensor, [String: Tensor], [Float]) {
            // Fresh running statistics each time: training mode updates them in place.
            let saved = m.buffers.mapValues { $0.copy() }
            defer { for (k, t) in saved { m.buffers[k]!.pointer.update(from: t.pointer, count: t.count) } }
            var r = RandomSource(seed: 1)
            let tape = Tape()
            let f = try m.forward(x, training: true, tape: tape, rng: &r, fusing: fusing)
            let z = tape.value(f.output)
            try tape.backward([(f.output, Tensor(shape: z.shape, values: (0..<z.count).map { Float($0 % 7) - 3 }))])
            var grads: [String: Tensor] = [:]
            for n in m.trainableNames { grads[n] = tape.grad(f.parameter(n)!) }
            return (z, grads, m.buffers.keys.sorted().flatMap { m.buffers[$0]!.array })
        }
        let plain = try step(nil)
        let fused = try step([])
        #expect(fused.0.array == plain.0.array, "\(name): outputs")
        #expect(fused.2 == plain.2, "\(name): running statistics")
        for (n, g) in plain.1 {
            let other: [Float] = fused.1[n]?.array ?? []
            #expect(other == g.array, "\(name): gradient of \(n)")
        }
        let groups = Lowering(m, keeping: []).groups
        #expect(groups.contains { $0.nodes.count > 1 })
        // Every node runs once, each group after what it reads.
        #expect(groups.flatMap { $0.nodes.map(\.name) }.sorted() == m.order.map(\.name).sorted())
        var made = Set(m.graph.inputs.map(\.name)).union(m.parameters.keys).union(m.buffers.keys)
        for g in groups {
            for n in g.nodes {
                #expect(n.inputs.allSatisfy { made.contains($0) }, "\(name): \(n.name) runs before what it reads")
                made.formUnion(n.outputs)
            }
        }
        // A tensor the caller reads is never fused away: the ones inside each group, kept, stay.
        func inside(_ groups: [Lowering.Group]) -> Set<String> { Set(groups.flatMap { $0.nodes.dropLast().map { $0.outputs[0] } }) }
        let kept = inside(groups)
        #expect(!kept.isEmpty)
        #expect(inside(Lowering(m, keeping: kept).groups).isDisjoint(with: kept))
    }

    /// A ×0.5 student for 3×32×32 inputs with non-trivial running statistics (drawn from a
    /// generator seeded `statistics`, returned for the test's own draws).
    static func student(_ name: String, statistics: UInt64) throws -> (Model, RandomSource) {
        var a = try Architecture(name: name)
        a.width = 0.5
        let m = try a.build(input: [3, 32, 32], classes: 10, seed: 1)
        var rng = RandomSource(seed: statistics)
        for (_, t) in m.buffers {
            for i in 0..<t.count { t[i] = t.shape.count == 1 && t[i] == 1 ? 0.5 + rng.nextFloat() : rng.nextFloat() - 0.5 }
        }
        return (m, rng)
    }

    @Test(
        "pointwise convolutions over maps of at most 16 pixels run as linear layers over their pixels, with residual and ReLU6, as the tape computes them"
    )
    func pointwiseSteps() throws {
        let (m, drawn) = try Self.student("mobilenetv2", statistics: 9)
        var rng = drawn
        let plan = try InferencePlan(m)
        let pointwise = plan.steps.filter {
            if case .pointwise = $0 { return true }
            return false
        }
        let withResidual = pointwise.filter {
            if case .pointwise(_, _, _, let residual, _) = $0 { return residual != nil }
            return false
        }
        #expect(pointwise.count >= 5 && !withResidual.isEmpty, "\(plan.stepNames)")
        // What only 1×1 convolutions read (the depthwise outputs, the blocks' outputs) has no halo.
        let depthwiseOutputs = m.order.filter { $0.op == .conv2d && $0.int("groups") > 1 }.map { $0.name }
        #expect(plan.unpadded.count >= depthwiseOutputs.count, "\(plan.unpadded.sorted())")
        let x = Tensor(shape: [3, 3, 32, 32], values: (0..<(3 * 3072)).map { _ in rng.nextFloat() })
        let (want, got) = (try m.predict(x), try plan.run(x))
        let scale = max(1, want.array.map(abs).max()!)
        #expect(zip(want.array, got.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
    }

    @Test(
        "each blocked activation keeps the halo its own readers need: a depthwise layer's input its padding, not the largest, and none on small maps"
    )
    func perTensorHalos() throws {
        let (m, drawn) = try Self.student("efficientnet-lite0", statistics: 11)
        var rng = drawn
        let plan = try InferencePlan(m)
        let shapes = Dictionary(
            try m.graph.stats(tensorShapes: m.tensorShapes, batch: 1).map { ($0.node.outputs[0], $0.outputShape) },
            uniquingKeysWith: { a, _ in a })
        var paddings = Set<Int>()
        var itself = Set<Int>()
        for step in plan.steps {
            if case .conv(let input, let weight, _, let window, let groups, _, _) = step, groups > 1, weight.shape[1] == 1 {
                let pad = window.pads.max() ?? 0
                let side = try #require(shapes[input])[2]
                // A 5 × 5 layer's input on 8 × 8 and 4 × 4 maps, a 3 × 3 one's on 4 × 4: the kernel pads the planes.
                let small = (pad == 2 && side <= 8) || (pad == 1 && side <= 4)
                #expect(
                    plan.pads[input] == (small ? 0 : pad), "\(input) (\(side) × \(side)): halo \(plan.pads[input] ?? 0), padding \(pad)")
                if small { itself.insert(pad) } else { paddings.insert(pad) }
            }
        }
        #expect(paddings == [1, 2], "3 × 3 and 5 × 5 depthwise layers with a halo")
        #expect(itself.contains(2), "5 × 5 depthwise layers on small maps without one")
        let x = Tensor(shape: [2, 3, 32, 32], values: (0..<(2 * 3072)).map { _ in rng.nextFloat() })
        let (want, got) = (try m.predict(x), try plan.run(x))
        let scale = max(1, want.array.map(abs).max()!)
        #expect(zip(want.array, got.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
    }

    @Test("ShuffleNet's concatenations, channel shuffles and splits run as gathers on blocked values and match the forward pass")
    func shuffleGathers() throws {
        let (m, drawn) = try Self.student("shufflenetv2", statistics: 7)
        var rng = drawn
        let plan = try InferencePlan(m)
        let gathers = plan.steps.filter {
            if case .gather = $0 { return true }
            return false
        }
        let leftOver = plan.steps.filter {
            if case .node(let node) = $0 { return [.concat, .slice, .reshape, .transpose].contains(node.op) }
            return false
        }
        #expect(!gathers.isEmpty && leftOver.isEmpty, "\(plan.stepNames)")
        // A split's left half, only concatenated again, is never copied on its own.
        #expect(!plan.stepNames.contains { $0.hasSuffix(".chunk0") }, "\(plan.stepNames)")
        let x = Tensor(shape: [3, 3, 32, 32], values: (0..<(3 * 3072)).map { _ in rng.nextFloat() })
        let (want, got) = (try m.predict(x), try plan.run(x))
        let scale = max(1, want.array.map(abs).max()!)
        #expect(zip(want.array, got.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
        // Kept intermediate values of a shuffle still come back, with the forward pass's values.
        let shuffled = m.order.first { $0.name.hasSuffix(".shuffle") }!.outputs[0]
        let keeping = try InferencePlan(m, keep: [shuffled])
        let (_, values) = try keeping.run(x, keeping: [shuffled])
        let tape = Tape(recording: false)
        var r = RandomSource(seed: 0)
        let f = try m.forward(x, training: false, tape: tape, rng: &r)
        let reference = tape.value(f.values[shuffled]!)
        #expect(zip(reference.array, values[shuffled]!.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
        // Training too: the tape records gathers and none of the NCHW channel ops, and a kept
        // shuffle output has the unfused pass's value (the gradients' bits: `fusedStep`).
        let training = Tape()
        var t = RandomSource(seed: 0)
        let trained = try m.forward(x, training: true, tape: training, rng: &t, fusing: [shuffled])
        let ops = training.recordedOps
        #expect(ops.contains("gather") && !ops.contains { ["slice", "concat", "transpose"].contains($0) }, "\(ops)")
        let unfused = Tape()
        t = RandomSource(seed: 0)
        let all = try m.forward(x, training: true, tape: unfused, rng: &t)
        #expect(training.value(trained.values[shuffled]!).array == unfused.value(all.values[shuffled]!).array)
    }
}
