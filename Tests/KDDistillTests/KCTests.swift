import Foundation
import KDBundle
import KDData
import KDNN
import KDTensor
import Testing

@testable import KDDistill

/// The KC and specialist sections of Golden/losses.json (tools/gen_golden.py).
enum KCGolden {
    nonisolated(unsafe) static let doc: [String: Any] = {
        let url = Bundle.module.url(forResource: "losses", withExtension: "json", subdirectory: "Golden")!
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()
    static func tensor(_ v: Any) -> Tensor {
        let d = v as! [String: Any]
        return Tensor(shape: d["shape"] as! [Int], values: (d["values"] as! [Double]).map { Float($0) })
    }
    static var kc: [String: Any] { doc["kc"] as! [String: Any] }
    static var specialists: [[String: Any]] { doc["specialists"] as! [[String: Any]] }
}

@Suite("Knowledge Concentration: loss, targets, heads, AP")
struct KCTests {
    @Test("sigmoid cross-entropy and its gradient match numpy")
    func sigmoidCE() {
        let c = KCGolden.kc["sigmoid_ce"] as! [String: Any]
        let (loss, grad) = KC.sigmoidCrossEntropy(logits: KCGolden.tensor(c["logits"]!), targets: KCGolden.tensor(c["targets"]!))
        let want = c["loss"] as! Double
        #expect(abs(Double(loss) - want) < 1e-4 * max(1, abs(want)), "\(loss) vs \(want)")
        let g = KCGolden.tensor(c["grad"]!)
        for i in 0..<g.count { #expect(abs(grad[i] - g[i]) < 1e-4, "grad[\(i)] \(grad[i]) vs \(g[i])") }
    }

    @Test("soft targets: zero outside the vertical and below top-K; K above the vertical's size keeps all; one-class vertical")
    func targets() {
        for c in KCGolden.kc["targets"] as! [[String: Any]] {
            let got = KC.softTargets(
                teacher: (c["probabilities"] as! [Double]).map { Float($0) }, vertical: c["vertical"] as! [Int], topK: c["top_k"] as! Int,
                classes: c["classes"] as! Int)
            let want = (c["targets"] as! [Double]).map { Float($0) }
            #expect(zip(got, want).allSatisfy { abs($0 - $1) < 1e-7 }, "\(c["name"]!): \(got) vs \(want)")
        }
    }

    @Test("average precision matches numpy; none without positives")
    func averagePrecision() {
        let c = KCGolden.kc["ap"] as! [String: Any]
        let ap = KC.averagePrecision(scores: (c["scores"] as! [Double]).map { Float($0) }, relevant: c["relevant"] as! [Bool])
        #expect(abs(ap! - (c["ap"] as! Double)) < 1e-6)
        #expect(KC.averagePrecision(scores: [0.1, 0.2], relevant: [false, false]) == nil)
        #expect(KC.averagePrecision(scores: [0.9, 0.1], relevant: [true, false]) == 1)
    }

    func verticals() -> VerticalMap {
        VerticalMap([
            .init(name: "a", classes: [0, 6, 8, 3]), .init(name: "b", classes: [1, 4, 7, 9]), .init(name: "c", classes: [2, 5]),
        ])
    }

    @Test("heads: SC needs fewer parameters than FC at the same width; outputs come back in class order; γ starts at √N_v")
    func heads() throws {
        var a = Architecture(.mlp)
        a.hidden = [32]
        let base = try a.build(input: [1, 8, 8], classes: 10, seed: 1)
        var counts: [KC.Head: Int] = [:]
        for head in [KC.Head.fc, .fcSC, .scSC, .fcSCShared] {
            let m = try KC.attachHead(to: base, head: head, verticals: verticals(), width: 8, shared: 2, selfPaced: .vertical, seed: 3)
            #expect(m.graph.outputKind == .sigmoid)
            counts[head] = m.trainableNames.reduce(0) { $0 + m.parameters[$1]!.count }
            let gamma = try #require(m.parameters["kc_head.self_paced.gamma"])
            #expect(gamma.array == [2, 2, Float(2).squareRoot()])
            #expect(m.frozen.contains("kc_head.class_order.weight"))
            // The model runs, and its bundle round-trips through the reader.
            let x = Tensor(shape: [2, 1, 8, 8], repeating: 0.5)
            #expect(try m.predict(x).shape == [2, 10])
            _ = try ModelBundle(bytes: BundleWriter.encode(m.contents())).verify()
        }
        #expect(counts[.fcSC]! < counts[.fc]! && counts[.scSC]! < counts[.fcSC]!, "\(counts)")
        // Class order: vertical a's first output is class 0, its second is class 6.
        let m = try KC.attachHead(to: base, head: .fcSC, verticals: verticals(), width: 8, shared: 2, selfPaced: .off, seed: 3)
        let p = try #require(m.parameters["kc_head.class_order.weight"])
        #expect(p[0 * 10 + 0] == 1 && p[6 * 10 + 1] == 1 && p[5 * 10 + 9] == 1)
    }

    @Test("the paper's head shapes: two hidden layers; sc-sc blocks that read the whole bottleneck; the self-paced ε")
    func paperHeads() throws {
        var a = Architecture(.mlp)
        a.hidden = [32]
        let base = try a.build(input: [1, 8, 8], classes: 10, seed: 1)
        let two = try KC.attachHead(
            to: base, head: .fcSC, verticals: verticals(), width: 8, shared: 2, selfPaced: .off, seed: 3, hiddenLayers: 2)
        #expect(two.parameters["kc_head.hidden2.weight"]?.shape == [24, 24])
        let split = try KC.attachHead(to: base, head: .scSC, verticals: verticals(), width: 8, shared: 2, selfPaced: .off, seed: 3)
        let all = try KC.attachHead(
            to: base, head: .scSC, verticals: verticals(), width: 8, shared: 2, selfPaced: .off, seed: 3, scInput: .all)
        // 32 bottleneck features over 3 verticals: 11/11/10 each (split), all 32 for every block (the paper's).
        #expect(split.parameters["kc_head.hidden.block1.weight"]?.shape == [8, 11])
        #expect(all.parameters["kc_head.hidden.block1.weight"]?.shape == [8, 32])
        #expect(all.parameters["kc_head.hidden.block3.weight"]?.shape == [8, 32])
        let x = Tensor(shape: [2, 1, 8, 8], repeating: 0.5)
        #expect(try all.predict(x).shape == [2, 10] && (try two.predict(x).shape) == [2, 10])
        let eps = try KC.attachHead(
            to: base, head: .fcSC, verticals: verticals(), width: 8, shared: 2, selfPaced: .vertical, seed: 3, selfPacedEpsilon: 1)
        #expect(eps.graph.nodes.first { $0.op == .l2normScale }?.float("epsilon") == 1)
        #expect(throws: DistillError.self) {
            try KC.attachHead(to: base, head: .fc, verticals: verticals(), width: 8, shared: 2, selfPaced: .off, seed: 3, hiddenLayers: 0)
        }
    }

    @Test("verticals must cover every class exactly once")
    func verticalChecks() {
        #expect(throws: DistillError.self) { try KC.check(VerticalMap([.init(name: "a", classes: [0, 1])]), classes: 3, source: "v") }
        #expect(throws: DistillError.self) {
            try KC.check(VerticalMap([.init(name: "a", classes: [0, 1]), .init(name: "b", classes: [1, 2])]), classes: 3, source: "v")
        }
        #expect(throws: Never.self) { try KC.check(verticals(), classes: 10, source: "v") }
    }
}

@Suite("Specialists: the KL combination against numpy")
struct SpecialistTests {
    func load(_ c: [String: Any]) -> ([Double], [(p: [Double], group: [Int])]) {
        (
            c["generalist"] as! [Double],
            (c["specialists"] as! [[String: Any]]).map { ($0["p"] as! [Double], $0["group"] as! [Int]) }
        )
    }

    @Test("objective value and gradient; the minimiser matches a long numpy descent")
    func combination() {
        for c in KCGolden.specialists {
            let (pg, specs) = load(c)
            let (value, grad) = Specialists.objective(r: c["r"] as! [Double], generalist: pg, specialists: specs)
            #expect(abs(value - (c["value"] as! Double)) < 1e-8, "\(c["name"]!)")
            for (a, b) in zip(grad, c["grad"] as! [Double]) { #expect(abs(a - b) < 1e-6, "\(c["name"]!) grad") }
            let q = Specialists.combine(generalist: pg, specialists: specs, steps: 3000)
            for (a, b) in zip(q, c["minimum_q"] as! [Double]) { #expect(abs(a - b) < 1e-3, "\(c["name"]!) q \(a) vs \(b)") }
        }
    }

    @Test("no specialist: the generalist's distribution; the dustbin correction adds log(oversampling)")
    func edges() throws {
        let p = [0.1, 0.7, 0.2]
        #expect(Specialists.combine(generalist: p, specialists: []) == p)
        var a = Architecture(.mlp)
        a.hidden = [8]
        let g = try a.build(input: [1, 4, 4], classes: 5, seed: 1)
        let s = try Specialists.initialise(from: g, group: [1, 3], classes: ["0", "1", "2", "3", "4"])
        #expect(s.classCount == 3 && s.labels?.classes == ["1", "3", Specialists.dustbin])
        let before = s.parameters["fc2.bias"]![2]
        Specialists.correctDustbin(s, oversampling: 4)
        #expect(abs(s.parameters["fc2.bias"]![2] - before - log(4)) < 1e-6)
    }
}

@Suite("Evaluations as library calls: ensembles, per-vertical AP, specialists")
struct EvaluationLibraryTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let digits = root.appendingPathComponent("data/digits/digits.csv.gz").path
    static let norm = Normalization(scale: 1.0 / 255, mean: [0], std: [1])

    func mlp(_ seed: UInt64) throws -> Model {
        var a = Architecture(.mlp)
        a.hidden = [16]
        return try a.build(input: [1, 8, 8], classes: 10, seed: seed)
    }

    @Test("an ensemble of one model is that model; members must share the task")
    func ensemble() throws {
        let eval = try DataSource.load(Self.digits, .init(split: .eval))
        let m = try mlp(1)
        let one = try Ensemble.evaluate([m], on: eval, normalization: Self.norm)
        let alone = try m.evaluate(Batcher(eval, batchSize: 256, shuffle: false, normalization: Self.norm, seed: 0))
        #expect(one.ensemble.correct == alone.correct && one.members[0].correct == alone.correct)
        let two = try Ensemble.evaluate([m, try mlp(2)], on: eval, normalization: Self.norm)
        #expect(two.members.count == 2 && two.ensemble.count == eval.count)
        var a = Architecture(.mlp)
        a.hidden = [4]
        let other = try a.build(input: [1, 8, 8], classes: 3, seed: 0)
        let e = #expect(throws: DistillError.self) { try Ensemble.evaluate([m, other], on: eval, normalization: Self.norm) }
        #expect(e?.code == .incompatible)
    }

    @Test("per-vertical AP covers the verticals whose classes the model names; specialists are recognised by the dustbin")
    func verticalsAndSpecialists() throws {
        let eval = try DataSource.load(Self.digits, .init(split: .eval))
        let m = try mlp(3)
        let map = VerticalMap([.init(name: "low", classes: [0, 1, 2, 3, 4]), .init(name: "high", classes: [5, 6, 7, 8, 9])])
        let rows = try KC.verticalAP(m, verticals: map, data: eval, normalization: Self.norm)
        #expect(rows.map(\.name) == ["low", "high"] && rows.allSatisfy { (0...1).contains($0.ap) })
        #expect(rows.map(\.images).reduce(0, +) == eval.count)
        #expect(try Specialists.group(of: m, generalistClasses: eval.classes, name: "m") == nil)
        var s = Architecture(.mlp)
        s.hidden = [4]
        let spec = try s.build(input: [1, 8, 8], classes: 3, seed: 0)
        spec.labels = Labels(["3", "5", Specialists.dustbin])
        #expect(try Specialists.group(of: spec, generalistClasses: eval.classes, name: "s") == [3, 5])
        let r = try Specialists.evaluate(
            generalist: m, specialists: [(spec, [3, 5])], data: eval, normalization: Self.norm)
        #expect(r.total == eval.count && r.rows.map(\.images).reduce(0, +) == eval.count)
    }
}
