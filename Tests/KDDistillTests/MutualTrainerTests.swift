import Glibc
import KDBundle
import KDData
import KDNN
import KDTensor
import Testing

@testable import KDDistill

@Suite("Deep Mutual Learning trainer", .serialized)
struct MutualTrainerTests {
    static let digits: Dataset = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return try! DataSource.load(parts.joined(separator: "/") + "/data/digits/digits.csv.gz", .init(split: .train))
    }()

    func peers() throws -> [Model] {
        try [12, 20].enumerated().map { i, h in
            var a = Architecture(.mlp)
            a.hidden = [h]
            return try a.build(input: [1, 8, 8], classes: 10, seed: UInt64(i + 1))
        }
    }

    func trainer(_ peers: [Model], simultaneous: Bool = false, paths: [String]? = nil) -> MutualTrainer {
        var c = TrainConfig()
        c.epochs = 2
        c.batchSize = 64
        c.lr = 0.1
        c.seed = 3
        c.checkpointEvery = 7
        var d = DMLConfig()
        d.simultaneous = simultaneous
        let batches = Batcher(
            Self.digits, batchSize: 64, shuffle: true, normalization: .init(scale: 1.0 / 255, mean: [0], std: [1]), seed: 3)
        return MutualTrainer(peers: peers, config: c, dml: d, train: batches, eval: nil, checkpointPaths: paths)
    }

    func digests(_ models: [Model]) throws -> [String] {
        try models.map { try ModelBundle(bytes: BundleWriter.encode($0.contents())).contentDigest() }
    }

    @Test("interrupted and resumed, every peer ends as in an uninterrupted run; in-turn and simultaneous differ")
    func resume() throws {
        let reference = try peers()
        try trainer(reference).run()
        let together = try peers()
        try trainer(together, simultaneous: true).run()
        #expect(try digests(reference) != digests(together), "in turn, peer 2 sees peer 1 after its update")

        let dir = "/tmp/kdtool-dml-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(dir, 0o755)
        let paths = [dir + "/peer1.ckpt.kdb", dir + "/peer2.ckpt.kdb"]
        let first = trainer(try peers(), paths: paths)
        var steps = 0
        first.shouldStop = {
            steps += 1
            return steps == 30  // inside epoch 2
        }
        #expect(throws: Trainer.Interrupted.self) { try first.run() }
        let again = try peers()
        let started = try trainer(again, paths: paths).run(resume: true)
        #expect(started == 30)
        #expect(try digests(again) == digests(reference))
        #expect(paths.allSatisfy { access($0, F_OK) != 0 }, "checkpoints are removed after success")
    }

    @Test("in turn, peer 1 is updated as in simultaneous mode, and peer 2 then learns from peer 1's updated predictions")
    func inTurn() throws {
        // One step each: peer 1's update reads peer 2's initial predictions in both modes, so it is
        // identical; peer 2's reads peer 1's predictions after (in turn) or before (simultaneous) that update.
        func oneStep(simultaneous: Bool) throws -> [Model] {
            let ps = try peers()
            let t = trainer(ps, simultaneous: simultaneous)
            var steps = 0
            t.shouldStop = {
                steps += 1
                return steps == 1
            }
            #expect(throws: Trainer.Interrupted.self) { try t.run() }
            return ps
        }
        let turn = try oneStep(simultaneous: false)
        let together = try oneStep(simultaneous: true)
        #expect(turn[0].parameters["fc1.weight"]?.array == together[0].parameters["fc1.weight"]?.array)
        #expect(turn[1].parameters["fc1.weight"]?.array != together[1].parameters["fc1.weight"]?.array)
    }
}
