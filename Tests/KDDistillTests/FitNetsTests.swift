import KDData
import KDNN
import KDTensor
import Testing

@testable import KDDistill

@Suite("FitNets")
struct FitNetsTests {
    @Test("the regressor's kernel spans the size difference; a smaller guided layer is an error naming both shapes")
    func regressorShapes() throws {
        let conv = try FitNets.makeRegressor(guided: [16, 14, 14], hint: [32, 7, 7], guidedName: "g", hintName: "h", seed: 0)
        #expect(conv.weight.shape == [32, 16, 8, 8] && conv.bias.shape == [32])
        let pointwise = try FitNets.makeRegressor(guided: [8, 7, 7], hint: [32, 7, 7], guidedName: "g", hintName: "h", seed: 0)
        #expect(pointwise.weight.shape == [32, 8, 1, 1])
        let flat = try FitNets.makeRegressor(guided: [32], hint: [64], guidedName: "g", hintName: "h", seed: 0)
        #expect(flat.weight.shape == [64, 32])
        let e = #expect(throws: DistillError.self) {
            try FitNets.makeRegressor(guided: [16, 7, 7], hint: [32, 14, 14], guidedName: "stage1.relu", hintName: "stage2.relu", seed: 0)
        }
        #expect(e?.description.contains("stage1.relu [16, 7, 7]") == true && e?.description.contains("stage2.relu [32, 14, 14]") == true)
    }

    @Test("hint loss: value and gradient agree with finite differences")
    func hintLoss() {
        var rng = RandomSource(seed: 4)
        let r = Tensor(shape: [2, 3, 2, 2], values: (0..<24).map { _ in rng.nextFloat() })
        let u = Tensor(shape: [2, 3, 2, 2], values: (0..<24).map { _ in rng.nextFloat() })
        let (loss, grad) = FitNets.hintLoss(regressed: r, hint: u)
        let direct = (0..<24).reduce(0.0) { $0 + 0.5 * Double((r[$1] - u[$1]) * (r[$1] - u[$1])) } / 24
        #expect(abs(Double(loss) - direct) < 1e-6)
        for i in [0, 7, 23] {
            let step: Float = 1e-2
            let plus = r.copy()
            plus[i] += step
            let minus = r.copy()
            minus[i] -= step
            let fd = (FitNets.hintLoss(regressed: plus, hint: u).0 - FitNets.hintLoss(regressed: minus, hint: u).0) / (2 * step)
            #expect(abs(fd - grad[i]) < 1e-4)
        }
    }
}

@Suite("FitNets against numpy, and what stage 1 may touch", .serialized)
struct FitNetsGoldenTests {
    static var doc: [String: Any] { KCGolden.doc["fitnets"] as! [String: Any] }

    @Test("hint loss: the paper's ½‖u − r‖² per example, and ours divided by the hint's size D")
    func hint() throws {
        let h = Self.doc["hint"] as! [String: Any]
        let r = KCGolden.tensor(h["regressed"]!)
        let u = KCGolden.tensor(h["hint"]!)
        let (loss, grad) = FitNets.hintLoss(regressed: r, hint: u)
        let d = Double(r.count / r.shape[0])
        #expect(abs(Double(loss) - (h["loss"] as! Double)) < 1e-6)
        #expect(abs(Double(loss) * d - (h["paper_loss"] as! Double)) < 1e-4, "× D gives the paper's loss")
        let want = KCGolden.tensor(h["grad"]!)
        #expect((0..<grad.count).allSatisfy { abs(grad[$0] - want[$0]) < 1e-6 })
    }

    @Test("stage 2: CE + λ·CE(P_T^τ, P_S^τ) and its gradient at three points of the λ schedule (4 → 1)")
    func stage2() throws {
        let s = Self.doc["stage2"] as! [String: Any]
        let z = KCGolden.tensor(s["student"]!)
        let zt = KCGolden.tensor(s["teacher"]!)
        let labels = s["labels"] as! [Int]
        let tau = Float(s["tau"] as! Double)
        let total = s["total_steps"] as! Int
        let schedule = (s["lambda_schedule"] as! [Double]).map(Float.init)
        #expect((0..<total).map { FitNets.lambda(step: $0, totalSteps: total) } == schedule)
        for step in s["steps"] as! [[String: Any]] {
            let lambda = FitNets.lambda(step: step["step"] as! Int, totalSteps: total)
            #expect(abs(Double(lambda) - (step["lambda"] as! Double)) < 1e-6)
            let (loss, grad) = FitNets.stage2Loss(logits: z, teacherLogits: [zt], labels: labels, tau: tau, lambda: lambda)
            #expect(abs(Double(loss) - (step["loss"] as! Double)) < 1e-4)
            let want = KCGolden.tensor(step["grad"]!)
            #expect((0..<grad.count).allSatisfy { abs(grad[$0] - want[$0]) < 1e-4 })
        }
    }

    @Test("stage 1 moves only the student up to its guided layer and the regressor; its loss falls")
    func stage1Touches() throws {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        let digits = try DataSource.load(parts.joined(separator: "/") + "/data/digits/digits.csv.gz", .init(split: .train))
        var ta = Architecture(.mlp)
        ta.hidden = [24]
        let teacher = try ta.build(input: [1, 8, 8], classes: 10, seed: 5)
        var sa = Architecture(.mlp)
        sa.hidden = [12, 12]
        let student = try sa.build(input: [1, 8, 8], classes: 10, seed: 6)
        let reg = try FitNets.makeRegressor(guided: [12], hint: [24], guidedName: "relu1", hintName: "relu1", seed: 1)
        student.parameters[FitNets.regressorWeight] = reg.weight
        student.parameters[FitNets.regressorBias] = reg.bias
        func snapshot(_ m: Model) -> [String: [Float]] { m.parameters.mapValues { $0.array } }
        let teacherBefore = snapshot(teacher)
        let studentBefore = snapshot(student)
        var c = TrainConfig()
        c.epochs = 3
        c.batchSize = 64
        c.lr = 0.05
        c.seed = 2
        let batches = Batcher(digits, batchSize: 64, shuffle: true, normalization: .init(scale: 1.0 / 255, mean: [0], std: [1]), seed: 2)
        let trainer = Trainer(model: student, config: c, train: batches, eval: nil, checkpointPath: nil, metricsPath: nil)
        try trainer.hintTraining(teacher: teacher, hintNode: "relu1", guidedNode: "relu1")
        try trainer.run()
        #expect(snapshot(teacher) == teacherBefore, "the teacher never changes")
        let after = snapshot(student)
        for name in ["fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"] {
            #expect(after[name] == studentBefore[name], "\(name) is after the guided layer: stage 1 leaves it")
        }
        for name in ["fc1.weight", FitNets.regressorWeight] {
            #expect(after[name] != studentBefore[name], "\(name) is trained in stage 1")
        }
        let losses = trainer.history.map(\.trainLoss)
        #expect(losses.count == 3 && losses[2] < losses[0], "the hint loss falls: \(losses)")
    }
}
