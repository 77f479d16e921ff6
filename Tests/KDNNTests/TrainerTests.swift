import Glibc
import KDBundle
import KDData
import KDTensor
import Testing

@testable import KDNN

/// The 8×8 digits from data/ (committed): 1,797 real images, small enough for debug-build tests.
enum Digits {
    static let path = Repo.root + "/data/digits/digits.csv.gz"
    static let all: Dataset = try! DataSource.load(path, .init(split: .all))
    static let train: Dataset = try! DataSource.load(path, .init(split: .train))
    static let eval: Dataset = try! DataSource.load(path, .init(split: .eval))
    static let normalization = Normalization(scale: 1.0 / 255, mean: [0], std: [1])
}

enum Repo {
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()
}

func tinyMLP(seed: UInt64 = 0) throws -> Model {
    var a = Architecture(.mlp)
    a.hidden = [32]
    return try a.build(input: [1, 8, 8], classes: 10, seed: seed)
}

func temporaryPath(_ name: String) -> String {
    let dir = "/tmp/kdtool-nn-tests-\(getpid())"
    mkdir(dir, 0o755)
    return dir + "/" + name
}

func digest(_ m: Model) throws -> String { try ModelBundle(bytes: BundleWriter.encode(m.contents())).contentDigest() }

@Suite("Training", .serialized)
struct TrainerTests {
    func trainer(
        _ m: Model, epochs: Int = 2, seed: UInt64 = 3, checkpoint: String? = nil, every: Int = 0,
        augmentation: Augmentation = Augmentation(padCrop: 1)
    ) -> Trainer {
        var c = TrainConfig()
        c.epochs = epochs
        c.batchSize = 64
        c.lr = 0.1
        c.seed = seed
        c.checkpointEvery = every
        let batches = Batcher(
            Digits.train, batchSize: 64, shuffle: true, augmentation: augmentation, normalization: Digits.normalization, seed: seed)
        return Trainer(model: m, config: c, train: batches, eval: nil, checkpointPath: checkpoint, metricsPath: nil)
    }

    @Test("a small MLP learns the real digits")
    func learns() throws {
        let m = try tinyMLP()
        let before = try m.evaluate(Batcher(Digits.eval, batchSize: 128, shuffle: false, normalization: Digits.normalization, seed: 0))
        try trainer(m, epochs: 8, augmentation: .none).run()
        let after = try m.evaluate(Batcher(Digits.eval, batchSize: 128, shuffle: false, normalization: Digits.normalization, seed: 0))
        #expect(before.accuracy < 0.3)
        #expect(after.accuracy > 0.85, "eval accuracy \(after.accuracy)")
        #expect(after.count == Digits.eval.count)
    }

    @Test("the same seed and thread count give the same weights")
    func deterministic() throws {
        let a = try tinyMLP()
        let b = try tinyMLP()
        try trainer(a).run()
        try trainer(b).run()
        #expect(try digest(a) == digest(b))
        let c = try tinyMLP()
        try trainer(c, seed: 4).run()
        #expect(try digest(a) != digest(c))
    }

    @Test("interrupted and resumed, a run ends exactly where an uninterrupted one does")
    func resume() throws {
        let reference = try tinyMLP()
        try trainer(reference, epochs: 3).run()

        let path = temporaryPath("resume-\(UInt32.random(in: 0...UInt32.max)).ckpt.kdb")
        let first = try tinyMLP()
        let t1 = trainer(first, epochs: 3, checkpoint: path, every: 5)
        var steps = 0
        t1.shouldStop = {
            steps += 1
            return steps == 31  // mid-epoch 2
        }
        #expect(throws: Trainer.Interrupted.self) { try t1.run() }
        // A new process: fresh model object, state only from the checkpoint.
        let second = try tinyMLP(seed: 99)
        let started = try trainer(second, epochs: 3, checkpoint: path, every: 5).run(resume: true)
        #expect(started == 31)
        #expect(try digest(second) == digest(reference))
    }

    @Test("a checkpoint from other settings is refused")
    func fingerprint() throws {
        let path = temporaryPath("fp-\(UInt32.random(in: 0...UInt32.max)).ckpt.kdb")
        let t = trainer(try tinyMLP(), epochs: 2, checkpoint: path)
        t.shouldStop = { true }
        #expect(throws: Trainer.Interrupted.self) { try t.run() }
        #expect(throws: NNError.self) { try trainer(try tinyMLP(), epochs: 2, seed: 7, checkpoint: path).run(resume: true) }
    }
}
