import Foundation
import KDTensor
import Testing

@testable import KDDistill

struct LossCase: CustomStringConvertible, Sendable {
    let name: String
    let temperature: Float
    let alpha: Float
    let labels: [Int]?
    let student: Tensor
    let teachers: [Tensor]
    let loss: Float
    let grad: Tensor
    var description: String { name }

    static let all: [LossCase] = {
        let url = Bundle.module.url(forResource: "losses", withExtension: "json", subdirectory: "Golden")!
        let doc = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func tensor(_ v: Any) -> Tensor {
            let d = v as! [String: Any]
            return Tensor(shape: d["shape"] as! [Int], values: (d["values"] as! [Double]).map { Float($0) })
        }
        return (doc["cases"] as! [[String: Any]]).map { c in
            LossCase(
                name: c["name"] as! String, temperature: Float(c["temperature"] as! Double), alpha: Float(c["alpha"] as! Double),
                labels: c["labels"] as? [Int], student: tensor(c["student"]!), teachers: (c["teachers"] as! [Any]).map(tensor),
                loss: Float(c["loss"] as! Double), grad: tensor(c["grad"]!))
        }
    }()
}

@Suite("Hinton KD loss against numpy (tools/gen_golden.py)")
struct KDLossTests {
    /// float32 against float64 references with T² up to 400 scaling the soft term: 1e-4 relative.
    static let tolerance: Float = 1e-4

    @Test("loss and gradient match", arguments: LossCase.all)
    func golden(c: LossCase) {
        let targets = HintonLoss.softTargets(c.teachers, temperature: c.temperature)
        let parts = HintonLoss.evaluate(student: c.student, teacher: targets, labels: c.labels, temperature: c.temperature, alpha: c.alpha)
        #expect(abs(parts.total - c.loss) <= Self.tolerance * max(1, abs(c.loss)), "\(c.name): \(parts.total) vs \(c.loss)")
        let scale = max(1, c.grad.array.map(abs).max()!)
        for i in 0..<c.grad.count {
            #expect(abs(parts.gradient[i] - c.grad[i]) <= Self.tolerance * 10 * scale, "\(c.name) grad[\(i)]")
        }
    }

    @Test("edge cases: a student equal to its teacher has zero soft loss; α = 0 is plain cross-entropy")
    func edges() {
        let z = Tensor(shape: [2, 3], values: [1, 2, 3, -1, 0, 1])
        let same = HintonLoss.evaluate(student: z, teacher: Softmax.forward(z, temperature: 4), labels: nil, temperature: 4, alpha: 0.9)
        #expect(abs(same.soft) < 1e-6 && same.gradient.array.allSatisfy { abs($0) < 1e-6 })
        let ce = Softmax.crossEntropy(logits: z, labels: [2, 0])
        let hardOnly = HintonLoss.evaluate(student: z, teacher: Softmax.forward(z), labels: [2, 0], temperature: 1, alpha: 0)
        #expect(abs(hardOnly.total - ce.loss) < 1e-6)
        #expect(zip(hardOnly.gradient.array, ce.grad.array).allSatisfy { abs($0 - $1) < 1e-7 })
    }
}

struct DMLCase: CustomStringConvertible, Sendable {
    let name: String
    let ensemble: Bool
    let labels: [Int]
    let logits: Tensor
    let others: [Tensor]
    let loss: Float
    let grad: Tensor
    var description: String { name }

    static let all: [DMLCase] = {
        let url = Bundle.module.url(forResource: "losses", withExtension: "json", subdirectory: "Golden")!
        let doc = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func tensor(_ v: Any) -> Tensor {
            let d = v as! [String: Any]
            return Tensor(shape: d["shape"] as! [Int], values: (d["values"] as! [Double]).map { Float($0) })
        }
        return (doc["dml"] as! [[String: Any]]).map { c in
            DMLCase(
                name: c["name"] as! String, ensemble: c["ensemble"] as! Bool, labels: c["labels"] as! [Int], logits: tensor(c["logits"]!),
                others: (c["others"] as! [Any]).map(tensor), loss: Float(c["loss"] as! Double), grad: tensor(c["grad"]!))
        }
    }()
}

@Suite("Deep Mutual Learning loss against numpy (tools/gen_golden.py)")
struct DMLLossTests {
    @Test("loss and gradient of peer k match, KL in the paper's direction", arguments: DMLCase.all)
    func golden(c: DMLCase) {
        let (loss, grad) = DMLLoss.evaluate(logits: c.logits, labels: c.labels, others: c.others, ensemble: c.ensemble)
        #expect(abs(loss - c.loss) <= KDLossTests.tolerance * max(1, abs(c.loss)), "\(c.name): \(loss) vs \(c.loss)")
        for i in 0..<c.grad.count { #expect(abs(grad[i] - c.grad[i]) <= KDLossTests.tolerance * 10, "\(c.name) grad[\(i)]") }
    }
}
