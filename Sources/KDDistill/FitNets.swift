import KDBundle
import KDNN
import KDTensor

/// FitNets (METHODS.md §2). Stage 1 trains the student up to its guided layer g, plus a regressor
/// r, to minimise ½‖u_h(x) − r(v_g(x))‖² against the teacher's hint layer h; r is a convolution
/// of kernel (H_g − H_h + 1)×(W_g − W_h + 1) with the teacher's channel count (a linear layer for
/// flat features), followed by ReLU. Stage 2 trains the whole student with
/// L = CE(y, P_S) + λ·CE(P_T^τ, P_S^τ), λ annealed linearly from 4 to 1, τ = 3.
public enum FitNets {
    public static let regressorWeight = "fitnets.regressor.weight"
    public static let regressorBias = "fitnets.regressor.bias"

    /// Output shape (without the batch) of a graph node.
    public static func outputShape(_ model: Model, node: String) throws -> [Int] {
        guard let n = model.graph.node(named: node) else {
            let names = model.graph.nodes.map(\.name)
            throw DistillError(
                code: .layer,
                "no layer '\(node)' in the graph (layers: \(names.prefix(12).joined(separator: ", "))\(names.count > 12 ? ", …" : ""))")
        }
        let shapes = Dictionary(
            uniqueKeysWithValues: model.tensorNames.compactMap { name in
                (model.parameters[name] ?? model.buffers[name]).map { (name, $0.shape) }
            })
        let stats = try model.graph.stats(tensorShapes: shapes, batch: 1)
        return Array(stats.first { $0.node.name == n.name }!.outputShape.dropFirst())
    }

    /// The regressor for guided features of `guided` shape onto hint features of `hint` shape.
    public static func makeRegressor(guided: [Int], hint: [Int], guidedName: String, hintName: String, seed: UInt64) throws
        -> (weight: Tensor, bias: Tensor)
    {
        let describe = "guided layer \(guidedName) \(guided) and hint layer \(hintName) \(hint)"
        guard guided.count == hint.count, guided.count == 1 || guided.count == 3 else {
            throw DistillError(code: .layer, "\(describe) are not both feature maps (C×H×W) or both flat")
        }
        var rng = RandomSource(seed: seed, stream: 0xf17)
        if guided.count == 1 {
            let bound = 1 / Float(guided[0]).squareRoot()
            let w = Tensor(shape: [hint[0], guided[0]], values: (0..<(hint[0] * guided[0])).map { _ in (rng.nextFloat() * 2 - 1) * bound })
            return (w, Tensor(shape: [hint[0]], values: (0..<hint[0]).map { _ in (rng.nextFloat() * 2 - 1) * bound }))
        }
        guard guided[1] >= hint[1], guided[2] >= hint[2] else {
            throw DistillError(code: .layer, "\(describe): the guided features must be at least as large as the hint's")
        }
        let (kh, kw) = (guided[1] - hint[1] + 1, guided[2] - hint[2] + 1)
        let fanIn = guided[0] * kh * kw
        let bound = 1 / Float(fanIn).squareRoot()
        let n = hint[0] * fanIn
        let w = Tensor(shape: [hint[0], guided[0], kh, kw], values: (0..<n).map { _ in (rng.nextFloat() * 2 - 1) * bound })
        return (w, Tensor(shape: [hint[0]], values: (0..<hint[0]).map { _ in (rng.nextFloat() * 2 - 1) * bound }))
    }

    /// ½‖u − r‖² per example, divided by the hint's element count D: ½ Σ (r − u)² / (N·D), gradient
    /// (r − u)/(N·D). The 1/D only rescales the paper's loss (same minimiser, same gradient
    /// direction); without it a 32×14×14 hint makes the stage-1 gradient ~6,000× larger than a
    /// classification loss and the default learning rate diverges.
    /// λ at `step` of a run of `totalSteps`: linear from `start` (first step) to `end` (last step).
    public static func lambda(step: Int, totalSteps: Int, start: Float = 4, end: Float = 1) -> Float {
        start + (end - start) * Float(step) / Float(max(1, totalSteps - 1))
    }

    /// The stage-2 loss CE(y, P_S) + λ·CE(P_T^τ, P_S^τ) (no τ² factor, as in the paper), averaged
    /// over the batch, and its gradient with respect to the student's logits.
    public static func stage2Loss(logits z: Tensor, teacherLogits: [Tensor], labels: [Int], tau: Float, lambda: Float) -> (Float, Tensor) {
        let targets = HintonLoss.softTargets(teacherLogits, temperature: tau)
        let (ce, grad) = Softmax.crossEntropy(logits: z, labels: labels)
        let (soft, softGrad) = Softmax.softCrossEntropy(logits: z, targets: targets, temperature: tau)
        for i in 0..<grad.count { grad[i] += lambda * softGrad[i] }
        return (ce + lambda * soft, grad)
    }

    public static func hintLoss(regressed r: Tensor, hint u: Tensor) -> (Float, Tensor) {
        let n = Float(r.count)
        let g = Tensor(uninitialized: r.shape)
        var s: Double = 0
        for i in 0..<r.count {
            let d = r[i] - u[i]
            s += Double(d * d)
            g[i] = d / n
        }
        return (Float(0.5 * s / Double(n)), g)
    }
}

extension Trainer {
    /// Stage 1: the student's guided output through the regressor (stored as student parameters
    /// `FitNets.regressorWeight/Bias`) against the teacher's hint output.
    public func hintTraining(teacher: Model, hintNode: String, guidedNode: String) throws {
        stage = "fitnets-hint"
        guard let hintOut = teacher.graph.node(named: hintNode)?.outputs.first,
            let guidedOut = model.graph.node(named: guidedNode)?.outputs.first
        else { throw DistillError(code: .layer, "hint or guided layer not found") }
        let student = model
        // The teacher runs on its inference plan (the same one KD's teacher outputs come from), keeping the hint.
        let teacherPlan = try InferencePlan(teacher, keep: [hintOut])
        objectiveReads = [guidedOut]
        objective = { batch, f in
            let tape = f.tape
            guard let v = f.values[guidedOut], let w = f.parameter(FitNets.regressorWeight), let b = f.parameter(FitNets.regressorBias)
            else {
                throw DistillError(code: .layer, "the guided layer or the regressor is missing")
            }
            let ws = tape.value(w).shape
            var r: Var
            if ws.count == 4 {
                r = try tape.conv2d(v, w, b, Window(kernel: [ws[2], ws[3]], stride: [1, 1], pads: [0, 0, 0, 0]), groups: 1)
            } else {
                r = try tape.linear(v, w, b)
            }
            r = tape.relu(r)
            guard let u = try teacherPlan.run(batch.inputs, keeping: [hintOut]).values[hintOut] else {
                throw DistillError(code: .layer, "the hint layer '\(hintOut)' has no value")
            }
            let (loss, grad) = FitNets.hintLoss(regressed: tape.value(r), hint: u)
            _ = student
            return (loss, [(r, grad)])
        }
    }

    /// Stage 2: CE(y, P_S) + λ·CE(P_T^τ, P_S^τ) with λ going linearly from `lambdaStart` to `lambdaEnd`.
    public func fitnetsKD(from teachers: TeacherOutputs, tau: Float, lambdaStart: Float = 4, lambdaEnd: Float = 1) {
        stage = "fitnets-kd"
        objective = { [unowned self] batch, f in
            let lambda = FitNets.lambda(step: self.currentStep, totalSteps: self.totalSteps, start: lambdaStart, end: lambdaEnd)
            let (loss, grad) = FitNets.stage2Loss(
                logits: f.tape.value(f.output), teacherLogits: try teachers.logits(batch), labels: batch.labels, tau: tau, lambda: lambda)
            return (loss, [(f.output, grad)])
        }
    }
}
