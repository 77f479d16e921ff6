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
