import KDBundle
import KDData
import KDIO
import KDTensor
import Testing

@testable import KDNN

@Suite("TrainingJob (the training run as a library call)", .serialized)
struct TrainingJobTests {
    func job(_ m: Model, epochs: Int = 2) -> TrainingJob {
        var c = TrainConfig()
        c.epochs = epochs
        c.batchSize = 64
        c.lr = 0.1
        c.seed = 4
        return TrainingJob(model: m, train: Digits.train, config: c, normalization: Digits.normalization)
    }

    @Test("keepBest holds out a seeded validation subset of the training split only; metrics describe the kept weights")
    func validationHoldout() throws {
        let m = try tinyMLP(seed: 1)
        var j = job(m)
        j.eval = Digits.eval
        j.keepBest = true
        j.validationFraction = 0.2
        j.bestPath = temporaryPath("job-best.kdb")
        var trainedOn = 0
        j.onReady = { trainedOn = $0.train.count }
        let r = try j.run(resume: false)
        let held = Digits.train.count - trainedOn
        #expect(held > 0 && r.validationCount == held && r.trainCount == trainedOn)
        #expect(r.metrics["val_count"] == .uint(UInt64(held)))
        guard case .uint(let best)? = r.metrics["best_epoch"] else {
            Issue.record("no best epoch")
            return
        }
        #expect((1...2).contains(best))
        // The eval figures are those of the weights the model now holds (the best epoch's).
        let e = try m.evaluate(Batcher(Digits.eval, batchSize: 256, shuffle: false, normalization: Digits.normalization, seed: 0))
        #expect(r.metrics["eval_accuracy"] == .float(e.accuracy))
        #expect(r.history.count == 2)
    }

    @Test("data that does not fit the model is an invalid input, named, before any step")
    func dataMismatch() throws {
        var a = Architecture(.mlp)
        a.hidden = [8]
        let wrong = try a.build(input: [1, 9, 9], classes: 10, seed: 0)
        let e = #expect(throws: NNError.self) { try job(wrong).run(resume: false) }
        #expect(e?.code == .dataMismatch && e?.category == .invalidInput)
        #expect(e?.description.contains("[1, 8, 8]") == true)
        let diverged = NNError("loss became nan", code: .diverged)
        #expect(diverged.category == .precondition && diverged.errorCode == "nn.diverged")
    }

    @Test("a fresh model numbered 0…N−1 takes the data's class names")
    func adoptsLabels() throws {
        let m = try tinyMLP()
        m.labels = Labels((0..<10).map(String.init))
        var d = Digits.train
        d.classes = (0..<10).map { "digit\($0)" }
        var j = job(m, epochs: 1)
        j.train = d
        _ = try j.run(resume: false)
        #expect(m.labels?.classes.first == "digit0")
    }
}
