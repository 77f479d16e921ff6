import Foundation
import KDTestSupport
import Testing

/// What a new user meets between init and export: preprocessing that travels with the model,
/// early stopping, CSV logs, sweep summaries, the report's loss axes and the import warnings.
@Suite("the user's journey", .serialized)
struct JourneyTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    func p(_ d: URL, _ n: String) -> String { d.appendingPathComponent(n).path }

    func inspect(_ path: String) throws -> [String: Any] {
        let r = try CLI.run(["inspect", path, "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
    }

    /// A float32 .npy (version 1.0 header), as numpy writes it.
    func writeNpy(_ path: String, shape: [Int], _ values: [Float]) throws {
        var header =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))\(shape.count == 1 ? "," : "")), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func readNpyFloats(_ path: String) throws -> [Float] {
        let b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let start = 10 + Int(b[8]) + Int(b[9]) << 8
        return stride(from: start, to: b.count, by: 4).map { i in
            Float(bitPattern: UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24)
        }
    }

    @Test("init --data takes classes, names, shape and normalisation from a CIFAR tarball; presets and flags set PREP")
    func initFromData() throws {
        let d = try Scratch.folder("kdtool-journey")
        let tar = try TestData.cifarTarball(trainPerClass: 4, testPerClass: 1)
        let r = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--data", tar, "-o", p(d, "m.kdb")])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("input [3, 32, 32], 10 classes") && r.out.contains("airplane, automobile"), "\(r.out)")
        let doc = try inspect(p(d, "m.kdb"))
        #expect((doc["labels"] as? [String])?.first == "airplane")
        let prep = try #require(doc["preprocessing"] as? [String: Any])
        let mean = try #require(prep["mean"] as? [Double])
        #expect(mean.count == 3 && mean.allSatisfy { $0 > 0.05 && $0 < 0.95 }, "the data's own statistics, not 0: \(mean)")
        // A fresh CIFAR student distils from a trained-on-CIFAR teacher without a label clash.
        let preset = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "3x32x32", "--normalize", "cifar10", "--resize",
            "shorter-side-crop", "-o", p(d, "c.kdb"),
        ])
        #expect(preset.status == 0, "\(preset.err)")
        let c = try #require(try inspect(p(d, "c.kdb"))["preprocessing"] as? [String: Any])
        #expect((c["mean"] as? [Double])?.first.map { abs($0 - 0.4914) < 1e-4 } == true)
        #expect(c["resize"] as? String == "shorter-side-crop")
        let wrong = try CLI.run([
            "init", "--arch", "mlp", "--classes", "10", "--input", "1x8x8", "--normalize", "imagenet", "-o", p(d, "x.kdb"),
        ])
        #expect(wrong.status == 64 && wrong.err.contains("3-channel"), "\(wrong.err)")
        // train --normalize replaces PREP and says so.
        let t = try CLI.run([
            "train", p(d, "m.kdb"), "--data", tar, "--epochs", "1", "--normalize", "none", "-o", p(d, "t.kdb"),
        ])
        #expect(t.status == 0 && t.err.contains("preprocessing: mean 0.0,0.0,0.0"), "\(t.err)")
    }

    @Test("--patience stops on the validation split and keeps the best epoch; a CSV twin of the metrics log is written")
    func earlyStoppingAndCSV() throws {
        let d = try Scratch.folder("kdtool-journey")
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--data", Self.digits, "-o", p(d, "m.kdb")])
        // A learning rate so small that the weights hardly move: validation accuracy cannot improve, so patience 1
        // must end the run early on any CPU. (A far too high rate, 40, stalled at once on an AMD EPYC but on an Intel
        // Xeon improved twice and then diverged to NaN before patience ended the run.)
        let r = try CLI.run([
            "train", p(d, "m.kdb"), "--data", Self.digits, "--epochs", "30", "--lr", "1e-9", "--keep", "best", "--patience", "1",
            "-o", p(d, "o.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("stopped early after epoch"), "\(r.err)")
        let csv = try String(contentsOfFile: p(d, "o.metrics.csv"), encoding: .utf8).split(separator: "\n")
        #expect(csv.first?.hasPrefix("epoch,step,stage,train_loss,train_accuracy,val_loss,val_accuracy") == true, "\(csv.first ?? "")")
        let jsonl = try String(contentsOfFile: p(d, "o.metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(csv.count == jsonl.count + 1, "one row per JSON line, plus the header")
        #expect(csv.count - 1 < 30, "fewer epochs than asked")
        let prov = try #require(try inspect(p(d, "o.kdb"))["provenance"] as? [String: Any])
        let metrics = try #require(prov["metrics"] as? [String: Any])
        #expect(metrics["stopped_early_after_epoch"] as? Int == csv.count - 1)
        let noKeep = try CLI.run(["train", p(d, "m.kdb"), "--data", Self.digits, "--patience", "2", "-o", p(d, "x.kdb")])
        #expect(noKeep.status == 64 && noKeep.err.contains("--keep best"), "\(noKeep.err)")
    }

    @Test("a sweep ends with one table of its runs, and a CSV beside the config")
    func sweepSummary() throws {
        let d = try Scratch.folder("kdtool-journey")
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--data", Self.digits, "-o", p(d, "m.kdb")])
        let config = p(d, "sweep.yaml")
        try """
        model: \(p(d, "m.kdb"))
        data: \(Self.digits)
        epochs: 1
        eval-split: eval
        quiet: true
        sweep:
          lr: [0.05, 0.2]
        output: "\(d.path)/s-{lr}.kdb"
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let r = try CLI.run(["train", "--config", config])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("sweep of 2 runs:") && r.out.contains("eval acc %"), "\(r.out)")
        let rows = r.out.split(separator: "\n").filter { $0.hasPrefix("  ") && ($0.hasSuffix("s-0.05.kdb") || $0.hasSuffix("s-0.2.kdb")) }
        #expect(rows.count == 2 && rows.allSatisfy { $0.contains(" ok ") }, "\(rows)")
        let csv = try String(contentsOfFile: p(d, "sweep.summary.csv"), encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 3 && csv[0].hasPrefix("run,lr,status"), "\(csv)")
    }

    @Test("export carries preprocessing in metadata_props, import restores it, run --pixels applies it; the batch is dynamic")
    func preprocessingTravels() throws {
        let d = try Scratch.folder("kdtool-journey")
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "8", "--classes", "3", "--input", "3x4x4", "--mean", "0.5,0.4,0.3", "--std",
            "0.2,0.25,0.5",
            "--invert", "-o", p(d, "m.kdb"),
        ])
        let e = try CLI.run(["export", p(d, "m.kdb"), "-o", p(d, "m.onnx")])
        #expect(e.status == 0 && e.out.contains("batch N") && e.out.contains("x = 255 − pixel"), "\(e.out)\(e.err)")
        let back = try CLI.run(["import", p(d, "m.onnx"), "-o", p(d, "back.kdb")])
        #expect(back.status == 0 && back.out.contains("kdtool.preprocessing metadata"), "\(back.out)\(back.err)")
        let a = try #require(try inspect(p(d, "m.kdb"))["preprocessing"] as? [String: Any])
        let b = try #require(try inspect(p(d, "back.kdb"))["preprocessing"] as? [String: Any])
        #expect(a["mean"] as? [Double] == b["mean"] as? [Double] && a["std"] as? [Double] == b["std"] as? [Double])
        #expect(b["invert"] as? Bool == true)

        // run --pixels on raw pixels = run on pixels normalised by hand.
        let pixels = (0..<(2 * 48)).map { Float(($0 * 37) % 256) }
        let (mean, std): ([Float], [Float]) = ([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])
        let normalised = pixels.enumerated().map { i, v in ((255 - v) / 255 - mean[(i / 16) % 3]) / std[(i / 16) % 3] }
        try writeNpy(p(d, "raw.npy"), shape: [2, 3, 4, 4], pixels)
        try writeNpy(p(d, "x.npy"), shape: [2, 3, 4, 4], normalised)
        let r1 = try CLI.run(["run", p(d, "m.kdb"), "--input", p(d, "raw.npy"), "--pixels", "-o", p(d, "y1.npy")])
        let r2 = try CLI.run(["run", p(d, "m.kdb"), "--input", p(d, "x.npy"), "-o", p(d, "y2.npy")])
        #expect(r1.status == 0 && r2.status == 0, "\(r1.err)\(r2.err)")
        let y1 = try readNpyFloats(p(d, "y1.npy"))
        let y2 = try readNpyFloats(p(d, "y2.npy"))
        #expect(y1.count == 6 && zip(y1, y2).allSatisfy { abs($0 - $1) < 1e-4 }, "\(y1) vs \(y2)")

        // ONNX Runtime on --include-preprocessing's graph, fed raw pixels, agrees too.
        let python = CLI.root.path + "/.build/venv-onnx/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else { return }
        let g = try CLI.run(["export", p(d, "m.kdb"), "-o", p(d, "pixels.onnx"), "--include-preprocessing"])
        #expect(g.status == 0, "\(g.err)")
        let script = """
            import sys, numpy as np, onnxruntime as ort, onnx
            m = onnx.load(sys.argv[1])
            props = {p.key: p.value for p in m.metadata_props}
            assert "kdtool.preprocessing" in props and "kdtool.input" in props, props
            s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
            y = s.run(None, {"pixels": np.load(sys.argv[2])})[0]
            print(float(np.abs(y - np.load(sys.argv[3])).max()))
            """
        let o = try CLI.exec(python, ["-c", script, p(d, "pixels.onnx"), p(d, "raw.npy"), p(d, "y2.npy")])
        #expect(o.status == 0, "\(o.err)")
        #expect((Double(o.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1) < 1e-4, "\(o.out)")
    }

    @Test("training an imported graph without batch norm warns how to keep it; the zoo's lenet5 does not")
    func importedWithoutBatchNorm() throws {
        let d = try Scratch.folder("kdtool-journey")
        let tar = try TestData.cifarTarball(trainPerClass: 4, testPerClass: 1)
        _ = try CLI.run(["init", "--arch", "lenet5", "--width", "0.25", "--data", tar, "-o", p(d, "l.kdb")])
        let zoo = try CLI.run(["train", p(d, "l.kdb"), "--data", tar, "--epochs", "1", "-o", p(d, "l1.kdb")])
        #expect(zoo.status == 0 && !zoo.err.contains("no batch normalisation"), "\(zoo.err)")
        _ = try CLI.run(["export", p(d, "l.kdb"), "-o", p(d, "l.onnx")])
        _ = try CLI.run(["import", p(d, "l.onnx"), "-o", p(d, "imported.kdb")])
        let r = try CLI.run(["train", p(d, "imported.kdb"), "--data", tar, "--epochs", "1", "-o", p(d, "i1.kdb")])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("no batch normalisation") && r.err.contains("TrainingMode.PRESERVE"), "\(r.err)")
    }

    @Test("the report draws cross-entropy and the KD objective on separate loss charts, legends below the plot")
    func reportAxes() throws {
        let d = try Scratch.folder("kdtool-journey")
        try Scratch.teacherAndStudent(in: d)
        try FileManager.default.createDirectory(atPath: p(d, "runs"), withIntermediateDirectories: true)
        let a = try CLI.run(["train", p(d, "s.kdb"), "--data", Self.digits, "--epochs", "2", "--quiet", "-o", p(d, "runs/alone.kdb")])
        let b = try CLI.run([
            "distill", p(d, "t.kdb"), p(d, "s.kdb"), "--data", Self.digits, "--epochs", "2", "--no-teacher-cache", "--quiet", "-o",
            p(d, "runs/kd.kdb"),
        ])
        #expect(a.status == 0 && b.status == 0, "\(a.err)\(b.err)")
        let rep = try CLI.run(["report", p(d, "runs"), "-o", p(d, "r.html")])
        #expect(rep.status == 0, "\(rep.err)")
        let html = try String(contentsOfFile: p(d, "r.html"), encoding: .utf8)
        #expect(html.contains("id=\"loss-chart\"") && html.contains("id=\"loss-chart-2\""))
        #expect(html.contains("Training loss per epoch: cross-entropy") && html.contains("Training loss per epoch: KD loss"))
    }
}

@Suite("knowledge concentration's no-teacher baseline")
struct KCBaselineCLITests {
    @Test("--labels-only trains the head without teachers; teacher bundles given anyway are named as ignored")
    func labelsOnly() throws {
        let d = try Scratch.folder("kdtool-kc-baseline")
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let digits = CLI.root.path + "/data/digits/digits.csv.gz"
        try #"{"verticals":[{"name":"a","labels":["0","1","2","3","4"]},{"name":"b","labels":["5","6","7","8","9"]}]}"#
            .write(toFile: p("v.json"), atomically: true, encoding: .utf8)
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--data", digits, "-o", p("m.kdb")])
        let alone = try CLI.run([
            "distill", p("m.kdb"), "--method", "kc", "--labels-only", "--verticals", p("v.json"), "--head", "fc-sc", "--data", digits,
            "--epochs", "1", "--quiet", "-o", p("kc.kdb"),
        ])
        #expect(alone.status == 0 && !alone.err.contains("ignoring"), "\(alone.err)")
        let doc = try #require(
            try JSONSerialization.jsonObject(with: Data(try CLI.run(["inspect", p("kc.kdb"), "--json"]).out.utf8)) as? [String: Any])
        let hp = try #require((doc["provenance"] as? [String: Any])?["hyperparameters"] as? [String: Any])
        #expect(hp["teachers"] as? Bool == false && hp["head"] as? String == "fc-sc")
        let ignored = try CLI.run([
            "distill", p("m.kdb"), p("m.kdb"), "--method", "kc", "--labels-only", "--verticals", p("v.json"), "--data", digits,
            "--epochs", "1", "--quiet", "-o", p("kc2.kdb"),
        ])
        #expect(ignored.status == 0 && ignored.err.contains("ignoring"), "\(ignored.err)")
    }
}
