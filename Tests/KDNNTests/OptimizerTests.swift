import KDTensor
import Testing

@testable import KDNN

@Suite("Optimizers and schedules")
struct OptimizerTests {
    @Test("SGD with momentum and weight decay follows PyTorch's update")
    func sgd() {
        var opt = Optimizer(.sgd)
        opt.momentum = 0.9
        opt.weightDecay = 0.1
        let p = Tensor(shape: [2], values: [1, -2])
        let g = Tensor(shape: [2], values: [0.5, 0.25])
        opt.step(parameters: ["p": p], gradients: ["p": g], lr: 0.1)
        // d = g + wd·p = [0.6, 0.05]; buf = d; p -= lr·buf
        #expect(abs(p[0] - 0.94) < 1e-6 && abs(p[1] - (-2.005)) < 1e-6)
        opt.step(parameters: ["p": p], gradients: ["p": g], lr: 0.1)
        // d = [0.5 + 0.094, 0.25 − 0.2005]; buf = 0.9·[0.6, 0.05] + d
        #expect(abs(p[0] - (0.94 - 0.1 * (0.54 + 0.594))) < 1e-6)
        #expect(abs(p[1] - (-2.005 - 0.1 * (0.045 + 0.0495))) < 1e-6)
    }

    @Test("Adam's first step moves each weight by lr against its gradient's sign")
    func adam() {
        var opt = Optimizer(.adam)
        opt.weightDecay = 0
        let p = Tensor(shape: [3], values: [0, 0, 0])
        opt.step(parameters: ["p": p], gradients: ["p": Tensor(shape: [3], values: [3, -0.1, 0])], lr: 0.01)
        #expect(abs(p[0] + 0.01) < 1e-5 && abs(p[1] - 0.01) < 1e-5 && p[2] == 0)
    }

    @Test("AdamW decays weights directly, Adam through the gradient")
    func adamw() {
        var w = Optimizer(.adamw)
        w.weightDecay = 0.5
        let p = Tensor(shape: [1], values: [2])
        w.step(parameters: ["p": p], gradients: ["p": Tensor(shape: [1], values: [0])], lr: 0.1)
        #expect(abs(p[0] - 1.9) < 1e-6)
    }

    @Test("cosine decays from the base rate to zero; warm-up ramps linearly; step decays")
    func schedules() {
        let c = Schedule(kind: .cosine, baseLR: 0.1, totalSteps: 100)
        #expect(c.lr(at: 0) == 0.1)
        #expect(abs(c.lr(at: 50) - 0.05) < 1e-6)
        #expect(abs(c.lr(at: 100)) < 1e-7)
        let w = Schedule(kind: .cosine, baseLR: 0.1, totalSteps: 100, warmupSteps: 10)
        #expect(abs(w.lr(at: 0) - 0.01) < 1e-7 && abs(w.lr(at: 9) - 0.1) < 1e-7)
        var s = Schedule(kind: .step, baseLR: 1, totalSteps: 100)
        s.stepEvery = 30
        #expect(s.lr(at: 29) == 1 && abs(s.lr(at: 30) - 0.1) < 1e-7 && abs(s.lr(at: 60) - 0.01) < 1e-7)
    }
}
