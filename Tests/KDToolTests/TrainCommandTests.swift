import Foundation
import Testing

@Suite("kdtool init / train / eval", .serialized)
struct TrainCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    func temp() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    func digest(_ out: String) -> String? {
        out.split(separator: "\n").first { $0.hasPrefix("content digest ") }.map { String($0.dropFirst(15)) }
    }

    @Test("init → train → eval on the real digits, with metrics and provenance")
    func pipeline() throws {
        let d = try temp()
        let initial = d.appendingPathComponent("m.kdb").path
        let trained = d.appendingPathComponent("t.kdb").path
        let i = try CLI.run(["init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "-o", initial])
        #expect(i.status == 0, "\(i.err)")
        #expect(i.out.contains("2,410 parameters"))
        let t = try CLI.run([
            "train", initial, "--data", Self.digits, "--epochs", "6", "--batch", "32", "--augment", "none", "--eval-split", "eval", "-o",
            trained,
        ])
        #expect(t.status == 0, "\(t.err)")
        #expect(t.err.contains("epoch 6/6"))
        let metrics = try String(contentsOfFile: d.appendingPathComponent("t.metrics.jsonl").path, encoding: .utf8)
        #expect(metrics.split(separator: "\n").count == 6)
        #expect(!FileManager.default.fileExists(atPath: d.appendingPathComponent("t.ckpt.kdb").path), "checkpoint removed after success")
        let e = try CLI.run(["eval", trained, "--data", Self.digits, "--json"])
        #expect(e.status == 0, "\(e.err)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(e.out.utf8)) as? [String: Any])
        let accuracy = try #require(doc["accuracy"] as? Double)
        #expect(accuracy > 0.85, "eval accuracy \(accuracy)")
        #expect(doc["count"] as? Int == 359)
        #expect((doc["confusion"] as? [[Int]])?.count == 10)
        let inspect = try CLI.run(["inspect", trained, "--json"])
        let prov = try #require(
            (try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])?["provenance"] as? [String: Any])
        #expect(prov["method"] as? String == "train")
        #expect(((prov["parents"] as? [[String: Any]])?.first?["digest"] as? String)?.count == 64)
    }

    @Test("kill -9 at a checkpoint boundary, then --resume: the same model as an uninterrupted run")
    func killAndResume() throws {
        let d = try temp()
        let initial = d.appendingPathComponent("m.kdb").path
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "48", "--classes", "10", "--input", "1x8x8", "--seed", "3", "-o", initial])
        let args = ["--data", Self.digits, "--epochs", "12", "--batch", "16", "--checkpoint-every", "10", "--seed", "5", "--quiet"]
        let reference = try CLI.run(["train", initial] + args + ["-o", d.appendingPathComponent("ref.kdb").path])
        #expect(reference.status == 0, "\(reference.err)")

        let out = d.appendingPathComponent("out.kdb").path
        let checkpoint = d.appendingPathComponent("out.ckpt.kdb").path
        let p = Process()
        p.executableURL = CLI.binary
        // The hidden debug flag stops the process (SIGSTOP) right after its third checkpoint; the
        // test waits for that state, so the kill lands at a known boundary however fast the CPU is.
        p.arguments = ["train", initial] + args + ["--debug-stop-at-checkpoint", "3", "-o", out]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while !processStopped(p.processIdentifier) && p.isRunning && Date() < deadline { usleep(2000) }
        let killed = p.isRunning && processStopped(p.processIdentifier)
        #expect(killed, "the run never stopped at its third checkpoint")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: checkpoint), "the checkpoint is on disk when the process dies")
        #expect(!FileManager.default.fileExists(atPath: out), "no output before the run completes")

        let resumed = try CLI.run(["train", initial] + args.filter { $0 != "--quiet" } + ["--resume", "-o", out])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.err.contains("resumed from step 30"), "the third checkpoint, at 10 steps each")
        #expect(digest(resumed.out) != nil && digest(resumed.out) == digest(reference.out))
    }

    @Test("SIGTERM writes a checkpoint and exits 130; --resume finishes with the uninterrupted model")
    func terminateAndResume() throws {
        let d = try temp()
        let initial = d.appendingPathComponent("m.kdb").path
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "--seed", "4", "-o", initial])
        let args = ["--data", Self.digits, "--epochs", "12", "--batch", "16", "--seed", "6"]
        let reference = try CLI.run(["train", initial] + args + ["--quiet", "-o", d.appendingPathComponent("ref.kdb").path])
        let out = d.appendingPathComponent("out.kdb").path
        let p = Process()
        p.executableURL = CLI.binary
        // Stopped after its first checkpoint (hidden debug flag), then SIGTERM and SIGCONT: the
        // signal always arrives mid-run, whatever the CPU's speed.
        p.arguments = ["train", initial] + args + ["--checkpoint-every", "25", "--debug-stop-at-checkpoint", "1", "-o", out]
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while !processStopped(p.processIdentifier) && p.isRunning && Date() < deadline { usleep(2000) }
        let running = p.isRunning
        if running {
            kill(p.processIdentifier, SIGTERM)
            kill(p.processIdentifier, SIGCONT)
        }
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(running, "training finished before the signal; make the run longer")
        #expect(p.terminationStatus == 130, "\(message)")
        #expect(message.contains("--resume"))
        let resumed = try CLI.run(["train", initial] + args + ["--resume", "-o", out])
        #expect(resumed.status == 0 && resumed.err.contains("resumed from step"))
        #expect(digest(resumed.out) == digest(reference.out))
    }

    @Test("--keep best selects on a seeded validation subset of the training split and records it")
    func keepBest() throws {
        let d = try temp()
        let m = d.appendingPathComponent("m.kdb").path
        let out = d.appendingPathComponent("best.kdb").path
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "-o", m])
        let r = try CLI.run([
            "train", m, "--data", Self.digits, "--epochs", "4", "--batch", "32", "--keep", "best", "--eval-split", "eval", "-o", out,
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("kept epoch") && r.err.contains("validation acc"))
        #expect(!FileManager.default.fileExists(atPath: d.appendingPathComponent("best.best.kdb").path), "the selection file is cleaned up")
        let inspect = try CLI.run(["inspect", out, "--json"])
        let prov = try #require(
            (try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])?["provenance"] as? [String: Any])
        let metrics = try #require(prov["metrics"] as? [String: Any])
        #expect(metrics["val_count"] as? Int == 144, "10 % of the 1,438 training images")
        #expect((metrics["best_epoch"] as? Int).map { (1...4).contains($0) } == true)
        #expect((prov["data"] as? [String: Any])?["count"] as? Int == 1294, "trained on the rest")
    }

    @Test("errors: unknown architecture, mismatched data, missing data — one line, non-zero exit")
    func errors() throws {
        let d = try temp()
        let bad = try CLI.run([
            "init", "--arch", "vgg16", "--classes", "10", "--input", "1x8x8", "-o", d.appendingPathComponent("x.kdb").path,
        ])
        #expect(bad.status == 1 && bad.err.contains("unknown architecture 'vgg16'"))
        let m = d.appendingPathComponent("m.kdb").path
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x28x28", "-o", m])
        let mismatch = try CLI.run(["train", m, "--data", Self.digits, "--epochs", "1", "-o", d.appendingPathComponent("o.kdb").path])
        #expect(mismatch.status == 2, "data that does not fit the model is an invalid input")
        #expect(mismatch.err.contains("[1, 8, 8]") && mismatch.err.contains("[1, 28, 28]"))
        let missing = try CLI.run(["eval", m, "--data", "/nonexistent/data"])
        #expect(missing.status == 2 && missing.err.contains("/nonexistent/data"))
        #expect(try CLI.run(["init", "--arch", "mlp", "--classes", "10", "--input", "28x28", "-o", m]).status == 64)
    }
}

/// Whether a process is stopped (SIGSTOP): /proc/PID/stat reads "pid (comm) T …", the state after the last ')'.
func processStopped(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")"),
        stat.distance(from: close, to: stat.endIndex) > 2
    else { return false }
    return stat[stat.index(close, offsetBy: 2)] == "T"
}
