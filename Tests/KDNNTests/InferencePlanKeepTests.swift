import KDTensor
import Testing

@testable import KDNN

/// A plan built to keep intermediate values (FitNets' hint, FSP's maps) returns them as the unfused
/// forward pass computes them, fused layers included, and its output is unchanged.
@Suite("Inference plan: kept intermediate values")
struct InferencePlanKeepTests {
    @Test("kept values match the tape, including ones a fusion would absorb")
    func keep() throws {
        var a = Architecture(.resnet8)
        a.width = 0.5
        let m = try a.build(input: [1, 8, 8], classes: 10, seed: 4)
        var rng = RandomSource(seed: 9)
        let x = Tensor(uninitialized: [3, 1, 8, 8])
        for i in 0..<x.count { x[i] = rng.nextFloat() }
        // A batch norm's output (fused into conv+bn+relu otherwise), a ReLU's, and an addition's.
        let bn = try #require(m.order.first { $0.op == .batchnorm }).outputs[0]
        let relu = try #require(m.order.last { $0.op == .relu }).outputs[0]
        let add = try #require(m.order.first { $0.op == .add }).outputs[0]
        let plan = try InferencePlan(m, keep: [bn, relu, add])
        let (y, values) = try plan.run(x, keeping: [bn, relu, add])
        let tape = Tape(recording: false)
        var r = RandomSource(seed: 0)
        let f = try m.forward(x, training: false, tape: tape, rng: &r)
        for name in [bn, relu, add] {
            let want = tape.value(try #require(f.values[name]))
            let got = try #require(values[name])
            #expect(got.shape == want.shape)
            let scale = max(1, want.array.map(abs).max() ?? 1)
            #expect(zip(got.array, want.array).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, "\(name)")
        }
        let plain = try InferencePlan(m).run(x)
        #expect(zip(y.array, plain.array).allSatisfy { abs($0 - $1) <= 1e-4 }, "keeping values does not change the output")
        #expect(throws: NNError.self) { try plan.run(x, keeping: ["logits_not_kept"]) }
        #expect(throws: NNError.self) { try InferencePlan(m, keep: ["no_such_value"]) }
    }
}
