import Foundation
import KDBundle
import KDTensor
import KDTestSupport
import Testing

@testable import KDNN

/// One data-parallel step on ranks that are threads of this process (the collectives are the
/// ones MPI runs), against one process's step on the whole batch.
@Suite("data-parallel step")
struct DataParallelTests {
    /// A batch of `n` 3×8×8 images and labels, the same for every caller.
    func batch(_ n: Int) -> (Tensor, [Int]) {
        var rng = RandomSource(seed: 41)
        let x = Tensor(shape: [n, 3, 8, 8], values: (0..<(n * 192)).map { _ in rng.nextFloat() * 2 - 1 })
        return (x, (0..<n).map { $0 % 10 })
    }

    func rows(_ x: Tensor, _ r: Range<Int>) -> Tensor {
        let per = x.count / x.shape[0]
        return Tensor(shape: [r.count] + Array(x.shape.dropFirst()), values: Array(x.array[(r.lowerBound * per)..<(r.upperBound * per)]))
    }

    /// Gradients of the mean cross-entropy over `x`, each scaled by `weight`; with `sync`, batch
    /// norm's statistics are over every rank's rows.
    func gradients(_ m: Model, _ x: Tensor, _ labels: [Int], weight: Float, sync: World?) throws -> (grads: [String: Tensor], loss: Float) {
        let tape = Tape()
        tape.batchNormSync = sync
        var rng = RandomSource(seed: 5)
        let f = try m.forward(x, training: true, tape: tape, rng: &rng, fusing: [])
        let (loss, g) = Softmax.crossEntropy(logits: tape.value(f.output), labels: labels)
        try tape.backward([(f.output, g.scaled(by: weight))])
        var out: [String: Tensor] = [:]
        for name in m.trainableNames { if let v = f.parameter(name), let t = tape.grad(v) { out[name] = t } }
        return (out, loss)
    }

    func onRanks<R: Sendable>(_ n: Int, _ body: @escaping @Sendable (World) throws -> R) throws -> [R] {
        try ThreadRanks.run(n, body)
    }

    /// flatten → linear → batch norm over features (the NCHW kernel) → ReLU → linear.
    static func mlpWithBatchNorm() throws -> Model {
        var b = GraphBuilder(input: [3, 8, 8])
        var x = b.flatten("flatten", b.inputName)
        x = b.relu("relu", b.batchnorm("bn", b.linear("fc1", x, out: 24)))
        _ = b.linear("fc2", x, out: 10)
        let (params, buffers) = b.initialize(.torch, seed: 3)
        let graph = Graph(
            inputs: [.init(name: b.inputName, shape: [-1, 3, 8, 8])], outputs: [b.nodes.last!.outputs[0]], outputKind: .softmax,
            nodes: b.nodes)
        return try Model(graph: graph, parameters: params, buffers: buffers)
    }

    static func resnet8() throws -> Model {
        var a = Architecture(.resnet8)
        a.width = 4
        return try a.build(input: [3, 8, 8], classes: 10, seed: 7)
    }

    @Test(
        "with synchronized batch norm, 2 and 3 ranks (uneven shares) give one process's gradients, loss and statistics",
        arguments: ["resnet8 (channel-blocked batch norm)", "mlp (NCHW batch norm)"])
    func synchronized(_ which: String) throws {
        let model = try which.hasPrefix("resnet8") ? Self.resnet8() : Self.mlpWithBatchNorm()
        let n = 7
        let (x, labels) = batch(n)
        Parallel.configure(threads: 1)
        let reference = try model.copy()
        let (want, wantLoss) = try gradients(reference, x, labels, weight: 1, sync: nil)
        #expect(!want.isEmpty && reference.graph.nodes.contains { $0.op == .batchnorm })
        for ranks in [2, 3] {
            let copies = try (0..<ranks).map { _ in try model.copy() }
            let results = try onRanks(ranks) { world -> ([String: Tensor], Double, [String: Tensor]) in
                let m = copies[world.rank]
                let share = (n * world.rank / ranks)..<(n * (world.rank + 1) / ranks)
                let (g, loss) = try gradients(
                    m, rows(x, share), Array(labels[share]), weight: DataParallel.weight(share: share.count, of: n), sync: world)
                let r = try DataParallel(world: world).reduce(
                    gradients: g, names: m.trainableNames, shapes: m.parameters.mapValues(\.shape),
                    lossSum: Double(loss) * Double(share.count),
                    correct: 0, stop: false)
                return (r.gradients, r.lossSum / Double(n), m.buffers)
            }
            for (rank, (grads, loss, buffers)) in results.enumerated() {
                #expect(abs(loss - Double(wantLoss)) < 1e-5, "loss, \(ranks) ranks")
                #expect(Set(grads.keys) == Set(want.keys))
                for (name, w) in want {
                    let g = try #require(grads[name])
                    let scale = max(1e-3, w.array.map(abs).max() ?? 0)
                    let worst = zip(g.array, w.array).map { abs($0 - $1) }.max() ?? 0
                    #expect(worst <= 2e-4 * scale, "\(name): \(worst) against a scale of \(scale), \(ranks) ranks, rank \(rank)")
                }
                for (name, b) in reference.buffers {
                    let mine = try #require(buffers[name])
                    let worst = zip(mine.array, b.array).map { abs($0 - $1) }.max() ?? 0
                    #expect(worst <= 1e-4 * max(1, b.array.map(abs).max() ?? 0), "running statistics \(name), \(ranks) ranks")
                }
                if rank > 0 {
                    #expect(grads.keys.allSatisfy { grads[$0]!.array == results[0].0[$0]!.array }, "every rank holds the same bits")
                }
            }
        }
    }

    @Test("without synchronization each rank normalises its own share: the same bits on every rank, not one process's")
    func perRank() throws {
        let model = try Self.resnet8()
        let (x, labels) = batch(8)
        Parallel.configure(threads: 1)
        let (want, _) = try gradients(try model.copy(), x, labels, weight: 1, sync: nil)
        let copies = try (0..<2).map { _ in try model.copy() }
        let results = try onRanks(2) { world -> [String: Tensor] in
            let share = (4 * world.rank)..<(4 * world.rank + 4)
            let m = copies[world.rank]
            let (g, loss) = try gradients(m, rows(x, share), Array(labels[share]), weight: 0.5, sync: nil)
            return try DataParallel(world: world).reduce(
                gradients: g, names: m.trainableNames, shapes: m.parameters.mapValues(\.shape), lossSum: Double(loss) * 4, correct: 0,
                stop: false
            ).gradients
        }
        #expect(results[0].keys.allSatisfy { results[0][$0]!.array == results[1][$0]!.array })
        let differs = want.contains { name, w in zip(results[0][name]!.array, w.array).contains { abs($0 - $1) > 1e-3 * max(1, abs($1)) } }
        #expect(differs, "per-rank batch statistics are a different function of the batch")
    }
}
