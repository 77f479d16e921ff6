import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `mpirun -np 2` on loopback, as CI runs it (`tools/setup --mpi` installs Open MPI). Skipped
/// where Open MPI is not installed: a plain kdtool needs none.
enum MPI {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static var available: Bool { mpirun != nil }

    /// `mpirun -np N kdtool ARGS` (root in containers, more ranks than cores, shared memory only).
    static func run(_ n: Int, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try CLI.exec(mpirun!, launcher(n) + [CLI.binary.path] + args)
    }

    static func launcher(_ n: Int) -> [String] {
        ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader", "-np", "\(n)"]
    }

    /// The pid of rank `rank` of a kdtool whose command line mentions `marker`.
    static func pid(rank: Int, marker: String) -> pid_t? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = pid_t(e),
                let cmd = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"),
                String(decoding: cmd, as: UTF8.self).contains(marker),
                String(decoding: cmd, as: UTF8.self).hasPrefix(CLI.binary.path),
                let env = FileManager.default.contents(atPath: "/proc/\(e)/environ")
            else { continue }
            if env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) {
                return pid
            }
        }
        return nil
    }

    /// Whether process `pid` is stopped (SIGSTOP).
    static func isStopped(_ pid: pid_t) -> Bool {
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return false }
        let text = String(decoding: stat, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return false }
        return text[text.index(close, offsetBy: 2)] == "T"
    }

    static func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }
}

@Suite("data-parallel runs under mpirun", .enabled(if: MPI.available, "Open MPI is not installed (tools/setup --mpi)"), .serialized)
struct DistributedTests {
    static let mnist = CLI.root.path + "/data/mnist"

    func json(_ path: String) throws -> [String: Any] {
        let r = try CLI.run(["inspect", path, "--json"])
        #expect(r.status == 0, "\(r.err)")
        return try #require(JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
    }

    /// `kdtool init --arch mlp` into `path`, with these hidden widths, seed, classes and input.
    func initMLP(_ hidden: String, seed: Int, classes: Int = 10, input: String = "1x28x28", extra: [String] = [], _ path: String) throws {
        let r = try CLI.run(
            ["init", "--arch", "mlp", "--hidden", hidden, "--classes", "\(classes)", "--input", input, "--seed", "\(seed)", "-o", path]
                + extra)
        #expect(r.status == 0, "\(r.err)")
    }

    func digest(_ out: String) -> String? {
        out.split(separator: "\n").first { $0.hasPrefix("content digest ") }.map { String($0.dropFirst("content digest ".count)) }
    }

    func accuracy(_ metrics: String) throws -> Double {
        let last = try #require(try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n").last)
        let row = try #require(JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        return try #require(row["eval_accuracy"] as? Double)
    }

    @Test("train: 2 ranks reach 1 rank's accuracy, a rerun gives the same digest, provenance records N")
    func train() throws {
        let d = try Scratch.folder("kdtool-mpi-train")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try initMLP("64", seed: 3, p("s.kdb"))
        let common = [
            "train", p("s.kdb"), "--data", Self.mnist, "--epochs", "1", "--threads", "1", "--eval-split", "eval", "--augment", "none",
        ]
        let one = try CLI.run(common + ["-o", p("one.kdb")])
        #expect(one.status == 0, "\(one.err)")
        let two = try MPI.run(2, common + ["-o", p("two.kdb")])
        #expect(two.status == 0, "\(two.err)")
        let again = try MPI.run(2, common + ["-o", p("again.kdb")])
        #expect(again.status == 0, "\(again.err)")
        let (d2, d2b) = (try #require(digest(two.out)), try #require(digest(again.out)))
        #expect(d2 == d2b, "the same N and seed give the same content digest")
        // Summing in buckets during backward or once after it adds the same two numbers per
        // element with 2 ranks: the same digest.
        for kb in ["0", "4"] {
            let other = try MPI.run(2, common + ["--bucket-kb", kb, "-o", p("b\(kb).kdb")])
            #expect(other.status == 0, "\(other.err)")
            #expect(digest(other.out) == d2, "--bucket-kb \(kb)")
        }
        #expect(two.out.components(separatedBy: "content digest").count == 2, "only rank 0 prints")
        let (a1, a2) = (try accuracy(p("one.metrics.jsonl")), try accuracy(p("two.metrics.jsonl")))
        #expect(abs(a1 - a2) < 0.02, "N = 1: \(a1), N = 2: \(a2)")
        let prov = try #require(try json(p("two.kdb"))["provenance"] as? [String: Any])
        let hp = try #require(prov["hyperparameters"] as? [String: Any])
        #expect(hp["ranks"] as? Int == 2)
        // The step-time breakdown is in the metrics log.
        let log = try String(contentsOfFile: p("two.metrics.jsonl"), encoding: .utf8)
        #expect(log.contains("\"allreduce_bytes_per_step\"") && log.contains("\"compute_seconds\""))
        // Synchronized batch norm on a network that has it.
        #expect(
            try CLI.run(["init", "--arch", "resnet8", "--classes", "10", "--input", "1x28x28", "--seed", "3", "-o", p("r.kdb")]).status == 0
        )
        let sync = try MPI.run(
            2,
            [
                "train", p("r.kdb"), "--data", Self.mnist, "--epochs", "1", "--threads", "1", "--sync-batchnorm", "--eval-split", "eval",
                "-o", p("sync.kdb"),
            ])
        #expect(sync.status == 0, "\(sync.err)")
        let syncAccuracy = try accuracy(p("sync.metrics.jsonl"))
        #expect(syncAccuracy > 0.4, "one epoch of resnet8 (chance: 0.1): \(syncAccuracy)")
        let syncHP = try #require((try json(p("sync.kdb"))["provenance"] as? [String: Any])?["hyperparameters"] as? [String: Any])
        #expect(syncHP["sync_batchnorm"] as? Bool == true)
    }

    @Test("distill: teacher logits gathered once into the cache (the same file as 1 rank's), digests repeat; DML too")
    func distill() throws {
        let d = try Scratch.folder("kdtool-mpi-distill")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try initMLP("48", seed: 1, p("t0.kdb"))
        #expect(try CLI.run(["train", p("t0.kdb"), "--data", Self.mnist, "--epochs", "1", "--quiet", "-o", p("t.kdb")]).status == 0)
        try initMLP("16", seed: 2, p("s.kdb"))
        func kd(_ cache: String, _ out: String) -> [String] {
            [
                "distill", p("t.kdb"), p("s.kdb"), "--data", Self.mnist, "--epochs", "1", "--threads", "1", "--augment", "none",
                "--eval-split", "eval", "--teacher-cache-dir", p(cache), "-o", p(out),
            ]
        }
        let one = try CLI.run(kd("cache1", "one.kdb"))
        #expect(one.status == 0, "\(one.err)")
        let two = try MPI.run(2, kd("cache2", "two.kdb"))
        #expect(two.status == 0, "\(two.err)")
        let files1 = try FileManager.default.contentsOfDirectory(atPath: p("cache1"))
        let files2 = try FileManager.default.contentsOfDirectory(atPath: p("cache2"))
        #expect(files1.count == 1 && files1 == files2, "one cache file, under the same key")
        if let f = files1.first {
            #expect(FileManager.default.contents(atPath: p("cache1/\(f)")) == FileManager.default.contents(atPath: p("cache2/\(f)")))
        }
        let again = try MPI.run(2, kd("cache2", "again.kdb"))
        #expect(again.status == 0, "\(again.err)")
        #expect(digest(two.out) != nil && digest(two.out) == digest(again.out), "the cached logits give the same student")
        #expect(abs(try accuracy(p("one.metrics.jsonl")) - accuracy(p("two.metrics.jsonl"))) < 0.03)
        let dml = try MPI.run(
            2,
            [
                "distill", "--method", "dml", p("s.kdb"), p("t0.kdb"), "--data", Self.mnist, "--epochs", "1", "--threads", "1",
                "--eval-split", "eval", "-o", p("dml"),
            ])
        #expect(dml.status == 0, "\(dml.err)")
        #expect(FileManager.default.fileExists(atPath: p("dml/peer1.kdb")) && FileManager.default.fileExists(atPath: p("dml/peer2.kdb")))
    }

    @Test("infer and eval: the same rows and figures as 1 rank, rows in input order in one file")
    func inferAndEval() throws {
        let d = try Scratch.folder("kdtool-mpi-infer")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try initMLP("8", seed: 0, classes: 3, input: "3x16x16", extra: ["--labels", "cat,dog,bird"], p("m.kdb"))
        let images = InferCommandTests.images
        let one = try CLI.run(["infer", p("m.kdb"), images, "--top-k", "2", "--quiet", "-o", p("one.csv")])
        #expect(one.status == 3, "GIF and TIFF fail")
        for batch in ["1", "3"] {
            let two = try MPI.run(2, ["infer", p("m.kdb"), images, "--top-k", "2", "--batch", batch, "--quiet", "-o", p("two.csv")])
            #expect(two.status == 3, "\(two.err)")
            #expect(FileManager.default.contents(atPath: p("two.csv")) == FileManager.default.contents(atPath: p("one.csv")))
        }
        let jsonl = try MPI.run(2, ["infer", p("m.kdb"), images, "--format", "jsonl", "--quiet"])
        #expect(jsonl.out.split(separator: "\n").count == 14, "one line per file, on rank 0's stdout only")
        // eval: batches split across ranks, counts summed.
        try initMLP("8", seed: 0, p("e.kdb"))
        let e1 = try CLI.run(["eval", p("e.kdb"), "--data", Self.mnist, "--batch", "100", "--json"])
        let e2 = try MPI.run(2, ["eval", p("e.kdb"), "--data", Self.mnist, "--batch", "100", "--json"])
        #expect(e1.status == 0 && e2.status == 0, "\(e2.err)")
        let (j1, j2) = (
            try #require(JSONSerialization.jsonObject(with: Data(e1.out.utf8)) as? [String: Any]),
            try #require(JSONSerialization.jsonObject(with: Data(e2.out.utf8)) as? [String: Any])
        )
        #expect(j1["count"] as? Int == j2["count"] as? Int && j1["errors"] as? Int == j2["errors"] as? Int)
    }

    @Test(
        "a killed rank stops the job within seconds, naming it; a silent one times out; --resume finishes with 1 rank, and with 2 gives the uninterrupted digest"
    )
    func failures() throws {
        let d = try Scratch.folder("kdtool-mpi-kill")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try initMLP("32", seed: 5, p("s.kdb"))
        func job(_ out: String, _ extra: [String]) throws -> Process {
            let proc = Process()
            proc.executableURL = URL(fileURLWithPath: MPI.mpirun!)
            proc.arguments =
                MPI.launcher(2) + [
                    CLI.binary.path, "train", p("s.kdb"), "--data", Self.mnist, "--epochs", "2", "--threads", "1", "--checkpoint-every",
                    "20",
                    "--debug-stop-at-checkpoint", "1", "-o", p(out),
                ] + extra
            proc.standardOutput = FileHandle.nullDevice
            proc.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: p(out + ".err")).creatingEmpty())
            try proc.run()
            return proc
        }
        func stoppedRanks(_ out: String) throws -> (pid_t, pid_t) {
            var pids: (pid_t, pid_t)?
            #expect(
                MPI.waitUntil(60) {
                    guard let a = MPI.pid(rank: 0, marker: p(out)), let b = MPI.pid(rank: 1, marker: p(out)) else { return false }
                    pids = (a, b)
                    return MPI.isStopped(a) && MPI.isStopped(b)
                }, "both ranks pause at the first checkpoint")
            return try #require(pids)
        }

        // Killed: mpirun sees rank 1 die and stops the job.
        let killed = try job("k.kdb", [])
        let (root, other) = try stoppedRanks("k.kdb")
        #expect(FileManager.default.fileExists(atPath: p("k.ckpt.kdb")), "rank 0 wrote the checkpoint")
        let t0 = Date()
        kill(other, SIGKILL)
        kill(root, SIGCONT)
        #expect(MPI.waitUntil(20) { !killed.isRunning }, "the job ends, no hang")
        #expect(Date().timeIntervalSince(t0) < 20)
        #expect(killed.terminationStatus != 0)
        let err = try String(contentsOfFile: p("k.kdb.err"), encoding: .utf8)
        #expect(err.contains("rank 1"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: p("k.kdb")))

        // Resumed with one rank (and another thread count): continues from the checkpoint and finishes.
        let resumed = try CLI.run([
            "train", p("s.kdb"), "--data", Self.mnist, "--epochs", "2", "--threads", "2", "--checkpoint-every", "20", "--resume", "-o",
            p("k.kdb"),
        ])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.err.contains("resumed from step 20"), "\(resumed.err)")
        #expect(FileManager.default.fileExists(atPath: p("k.kdb")) && !FileManager.default.fileExists(atPath: p("k.ckpt.kdb")))

        // Silent: rank 1 stays stopped; rank 0 gives up after --rank-timeout, names it, and ends the job.
        let silent = try job("h.kdb", ["--rank-timeout", "3"])
        let (root2, _) = try stoppedRanks("h.kdb")
        let t1 = Date()
        kill(root2, SIGCONT)
        #expect(MPI.waitUntil(40) { !silent.isRunning }, "the job ends after the timeout")
        #expect(Date().timeIntervalSince(t1) < 40)
        #expect(silent.terminationStatus == 6, "exit 6: a rank was lost")
        let err2 = try String(contentsOfFile: p("h.kdb.err"), encoding: .utf8)
        #expect(err2.contains("no message from rank 1 for 3 s"), "\(err2)")

        // Resumed with the same 2 ranks: the digest of the run that was never interrupted.
        let train = [
            "train", p("s.kdb"), "--data", Self.mnist, "--epochs", "2", "--threads", "1", "--checkpoint-every", "20",
        ]
        let whole = try MPI.run(2, train + ["-o", p("whole.kdb")])
        let continued = try MPI.run(2, train + ["--resume", "-o", p("h.kdb")])
        #expect(whole.status == 0 && continued.status == 0, "\(continued.err)")
        #expect(continued.err.contains("resumed from step 20"), "\(continued.err)")
        #expect(digest(continued.out) != nil && digest(continued.out) == digest(whole.out))
    }
}

extension URL {
    /// Creates an empty file here (for a child's stderr) and returns the URL.
    fileprivate func creatingEmpty() throws -> URL {
        FileManager.default.createFile(atPath: path, contents: nil)
        return self
    }
}
