import Foundation
import KDBundle
import KDNN
import KDTensor
import Testing

@testable import KDDistill

struct FSPCase: CustomStringConvertible, Sendable {
    let name: String
    let f1: Tensor
    let f2: Tensor
    let pairs: Int
    let studentMatrices: [Tensor]
    let teacher: [Tensor]
    let loss: Float
    let gradF1: Tensor
    let gradF2: Tensor
    var description: String { name }

    static let all: [FSPCase] = {
        let url = Bundle.module.url(forResource: "losses", withExtension: "json", subdirectory: "Golden")!
        let doc = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func tensor(_ v: Any) -> Tensor {
            let d = v as! [String: Any]
            return Tensor(shape: d["shape"] as! [Int], values: (d["values"] as! [Double]).map { Float($0) })
        }
        return (doc["fsp"] as! [[String: Any]]).map { c in
            FSPCase(
                name: c["name"] as! String, f1: tensor(c["f1"]!), f2: tensor(c["f2"]!), pairs: c["pairs"] as! Int,
                studentMatrices: (c["student_matrices"] as! [Any]).map(tensor), teacher: (c["teacher"] as! [Any]).map(tensor),
                loss: Float(c["loss"] as! Double), gradF1: tensor(c["grad_f1"]!), gradF2: tensor(c["grad_f2"]!))
        }
    }()
}

@Suite("FSP matrices and loss against numpy (tools/gen_golden.py)")
struct FSPTests {
    func close(_ a: Tensor, _ b: Tensor, _ tol: Float, _ what: String) {
        #expect(a.shape == b.shape, "\(what): shape \(a.shape) vs \(b.shape)")
        let scale = max(1, b.array.map(abs).max() ?? 1)
        for i in 0..<min(a.count, b.count) where abs(a[i] - b[i]) > tol * scale {
            Issue.record("\(what)[\(i)]: \(a[i]) vs \(b[i])")
            return
        }
    }

    /// The student side as training runs it: pooling on the tape, matrices, loss, backward.
    @Test("matrices, loss and gradients (through the max-pool) match", arguments: FSPCase.all)
    func golden(c: FSPCase) throws {
        let tape = Tape()
        let v1 = tape.leaf(c.f1.copy(), requiresGrad: true)
        let v2 = tape.leaf(c.f2.copy(), requiresGrad: true)
        func pooled(_ v: Var, to other: Tensor) throws -> Var {
            let f = tape.value(v).shape[2] / other.shape[2]
            return f > 1 ? try tape.maxpool(v, FSP.poolWindow(f)) : v
        }
        var sides = [(try pooled(v1, to: c.f2), try pooled(v2, to: c.f1))]
        if c.pairs == 2 { sides.append((v2, v2)) }
        let matrices = try sides.map { try FSP.matrices(tape.value($0.0), tape.value($0.1)) }
        for (m, g) in zip(matrices, c.studentMatrices) { close(m, g, 1e-5, "\(c.name) G") }
        let (loss, dG) = FSP.loss(student: matrices, teacher: c.teacher)
        #expect(abs(loss - c.loss) <= 1e-4 * max(1, abs(c.loss)), "\(c.name): \(loss) vs \(c.loss)")
        var seeds: [(Var, Tensor)] = []
        for ((a, b), g) in zip(sides, dG) {
            let (da, db) = try FSP.backward(g, tape.value(a), tape.value(b))
            seeds += [(a, da), (b, db)]
        }
        try tape.backward(seeds)
        close(try #require(tape.grad(v1)), c.gradF1, 1e-3, "\(c.name) dF1")
        close(try #require(tape.grad(v2)), c.gradF2, 1e-3, "\(c.name) dF2")
    }

    @Test("a permuted FSP matrix is the FSP matrix of channel-permuted features")
    func permutation() throws {
        var rng = RandomSource(seed: 4)
        let f1 = Tensor(shape: [2, 3, 2, 2], values: (0..<24).map { _ in rng.nextNormal() })
        let f2 = Tensor(shape: [2, 4, 2, 2], values: (0..<32).map { _ in rng.nextNormal() })
        let (p1, p2) = ([2, 0, 1], [3, 1, 0, 2])
        func permuted(_ f: Tensor, _ p: [Int]) -> Tensor {
            let (n, c, s) = (f.shape[0], f.shape[1], f.shape[2] * f.shape[3])
            let out = Tensor(uninitialized: f.shape)
            for x in 0..<n { for i in 0..<c { for k in 0..<s { out[(x * c + i) * s + k] = f[(x * c + p[i]) * s + k] } } }
            return out
        }
        let direct = try FSP.matrices(permuted(f1, p1), permuted(f2, p2))
        let shuffled = FSP.permute(try FSP.matrices(f1, f2), rows: p1, columns: p2)
        close(shuffled, direct, 1e-6, "permuted")
    }

    @Test("channel spaces: a ResNet stage's input and output share channels (identity shortcuts), stages do not")
    func channelSpaces() throws {
        let m = try Architecture(.resnet8).build(input: [1, 16, 16], classes: 10, seed: 1)
        let spaces = FSP.channelSpaces(m)
        let pairs = try FSP.resolve(try #require(m.fspPairs).pairs, on: m, label: "resnet8")
        #expect(pairs.count == 3)
        #expect(spaces[pairs[0].first] == spaces[pairs[0].second], "stage 1 has identity shortcuts only")
        #expect(spaces[pairs[1].first] != spaces[pairs[1].second], "stage 2 starts with a projection")
        let perms = FSP.shufflePermutations(pairs, model: m, seed: 7)
        #expect(perms[0].rows == perms[0].columns, "one permutation per channel space")
        #expect(perms[0].columns == perms[1].rows)
        #expect(perms[1].rows != Array(0..<16), "seed 7 shuffles")
        #expect(pairs[1].firstPool == 2 && pairs[1].secondPool == 1, "the larger map is pooled: \(pairs[1])")
    }

    @Test("mismatched FSP matrices and unknown layers are refused, naming both sides")
    func errors() throws {
        let t = try Architecture(.resnet14).build(input: [1, 16, 16], classes: 10, seed: 1)
        var narrow = Architecture(.resnet8)
        narrow.width = 0.5
        let s = try narrow.build(input: [1, 16, 16], classes: 10, seed: 2)
        let tp = try FSP.resolve(t.fspPairs!.pairs, on: t, label: "teacher")
        let sp = try FSP.resolve(s.fspPairs!.pairs, on: s, label: "student")
        #expect(throws: DistillError.self) { try FSP.check(teacher: tp, student: sp, teacherName: "t.kdb", studentName: "s.kdb") }
        do {
            try FSP.check(teacher: tp, student: sp, teacherName: "t.kdb", studentName: "s.kdb")
        } catch {
            #expect("\(error)".contains("16×16") && "\(error)".contains("8×8"), "\(error)")
        }
        #expect(throws: DistillError.self) { try FSP.resolve([.init("relu1", "nope")], on: s, label: "student") }
        #expect(throws: DistillError.self) { try FSP.parsePairs("a:b,c") }
    }

    @Test("--fsp-rescale: convolutions that feed a batch norm go back to their initial norm; the statistics reset")
    func rescale() throws {
        var a = Architecture(.resnet8)
        a.width = 0.5
        let m = try a.build(input: [1, 8, 8], classes: 10, seed: 4)
        let initial = FSP.convNorms(m)
        #expect(!initial.isEmpty)
        for name in initial.keys { if let w = m.parameters[name] { for i in 0..<w.count { w[i] *= 7 } } }
        for (_, b) in m.buffers { b.fill(3) }
        let report = FSP.rescale(m, to: initial)
        #expect(report.count == initial.count && report.allSatisfy { abs($0.before / $0.after - 7) < 1e-3 })
        for (name, n) in FSP.convNorms(m) { #expect(abs(n - initial[name]!) < 1e-3 * initial[name]!) }
        let means = m.graph.nodes.filter { $0.op == .batchnorm }.map { $0.inputs[3] }
        let vars = m.graph.nodes.filter { $0.op == .batchnorm }.map { $0.inputs[4] }
        #expect(means.allSatisfy { m.buffers[$0]?.array.allSatisfy { $0 == 0 } == true })
        #expect(vars.allSatisfy { m.buffers[$0]?.array.allSatisfy { $0 == 1 } == true })
    }
}
