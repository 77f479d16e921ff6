import Foundation
import KDTestSupport
import Testing

@Suite("kdtool compare, bench, teacher cache", .serialized)
struct WorkflowCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    func temp() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-workflow-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    func json(_ s: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])
    }

    @Test("a sweep over T computes the teacher once (on-disk cache) and gives the same bundle as without the cache")
    func teacherCache() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try Scratch.teacherAndStudent(in: d)
        var digests: [String] = []
        for (i, args) in [["-T", "1"], ["-T", "4"], ["-T", "4", "--no-teacher-cache"]].enumerated() {
            let r = try CLI.run(
                [
                    "distill", p("t.kdb"), p("s.kdb"), "--data", Self.digits, "--epochs", "2", "--augment", "none", "--teacher-cache-dir",
                    p("cache"), "-o", p("d\(i).kdb"),
                ]
                    + args)
            #expect(r.status == 0, "\(r.err)")
            if i == 0 { #expect(r.err.contains("saved to the on-disk cache"), "\(r.err)") }
            if i == 1 { #expect(r.err.contains("0 computed") && r.err.contains("loaded from the on-disk cache"), "\(r.err)") }
            if i == 2 { #expect(!r.err.contains("on-disk cache") && !r.err.contains(" 0 computed"), "\(r.err)") }
            digests.append(r.out.split(separator: "\n").last.map(String.init) ?? "")
        }
        #expect(digests[1] == digests[2] && digests[1] != digests[0], "cached logits give the bundle computed ones give")
        // A damaged cache file is ignored and rewritten, never trusted.
        let files = try FileManager.default.contentsOfDirectory(atPath: p("cache"))
        #expect(files.count == 1)
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: p("cache/" + files[0])))
        let again = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--data", Self.digits, "--epochs", "1", "--augment", "none", "--teacher-cache-dir",
            p("cache"), "-o", p("d3.kdb"),
        ])
        #expect(again.status == 0 && again.err.contains("saved to the on-disk cache"), "\(again.err)")
    }

    @Test("compare: reference agrees with itself, students are measured on the same images")
    func compare() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("a0.kdb"),
        ])
        _ = try CLI.run([
            "train", p("a0.kdb"), "--data", Self.digits, "--epochs", "5", "--batch", "32", "--augment", "none", "--quiet", "-o", p("a.kdb"),
        ])
        let r = try CLI.run(["compare", p("a.kdb"), p("a0.kdb"), "--data", Self.digits, "--json", "--latency-runs", "5"])
        #expect(r.status == 0, "\(r.err)")
        let models = try #require(try json(r.out)["models"] as? [[String: Any]])
        #expect(models.count == 2)
        #expect(models[0]["agreement"] as? Double == 1 && models[0]["kl_from_first"] as? Double == 0)
        let trained = try #require(models[0]["accuracy"] as? Double)
        let untrained = try #require(models[1]["accuracy"] as? Double)
        #expect(trained > 0.8 && untrained < 0.5, "\(trained) vs \(untrained)")
        #expect((models[1]["kl_from_first"] as? Double ?? 0) > 0.1)
        for m in models {
            let ece = try #require(m["ece"] as? Double)
            #expect(ece >= 0 && ece <= 1)
            #expect((m["flops"] as? Int ?? 0) == 2 * (64 * 32 + 32 * 10) + 32, "two multiply-adds layers and one ReLU")
            #expect((m["latency_ms_p50"] as? Double ?? 0) > 0 && (m["images_per_second_batch64"] as? Double ?? 0) > 0)
        }
        let text = try CLI.run(["compare", p("a.kdb"), p("a0.kdb"), "--data", Self.digits, "--latency-runs", "5"])
        #expect(text.status == 0 && text.out.contains("KL(ref‖m)") && text.out.contains("ECE"))
    }

    @Test("bench: per-layer table sums to the pass, latency per batch size, peak RSS; ONNX Runtime ratio when a venv exists")
    func bench() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "lenet5", "--width", "0.5", "--classes", "10", "--input", "1x28x28", "-o", p("l.kdb")])
        let r = try CLI.run(["bench", p("l.kdb"), "--batch", "1,8", "--runs", "5", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let doc = try json(r.out)
        let batches = try #require(doc["batches"] as? [[String: Any]])
        #expect(batches.map { $0["batch"] as? Int } == [1, 8])
        let layers = try #require(doc["layers"] as? [[String: Any]])
        #expect(layers.contains { ($0["step"] as? String ?? "").hasPrefix("conv1+") })
        let shares = layers.compactMap { $0["share"] as? Double }
        #expect(abs(shares.reduce(0, +) - 1) < 1e-6 && shares == shares.sorted(by: >))
        #expect((doc["peak_rss_bytes"] as? Int ?? 0) > 1 << 20)
        // Which kernels ran: the build's vector units and OpenBLAS's kernel set (never its SSE3
        // fallback on a CPU that has AVX2, since kdtool restarts itself on better ones).
        #expect(["AVX-512", "AVX2", "native"].contains(doc["vector_units"] as? String ?? ""))
        #expect(doc["winograd"] as? Bool == true, "on by default (--debug-winograd off turns it off)")
        let core = doc["blas_core"] as? String ?? ""
        #expect(
            !core.isEmpty
                && (core != "Prescott" || !((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").contains(" avx2 ")),
            "OpenBLAS kernels: \(core)")
        if FileManager.default.isExecutableFile(atPath: CLI.root.path + "/.build/venv-onnx/bin/python") {
            let o = try CLI.run(["bench", p("l.kdb"), "--batch", "1", "--runs", "5", "--compare-onnxruntime", "--json"])
            #expect(o.status == 0, "\(o.err)")
            let b = try #require((try json(o.out)["batches"] as? [[String: Any]])?.first)
            #expect((b["speed_ratio_vs_onnxruntime"] as? Double ?? 0) > 0)
        }
    }
}

@Suite("kdtool --config, --seeds, rerun", .serialized)
struct ConfigCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    @Test("a YAML sweep over T × seeds: one teacher computation, summaries, resolved configs; unknown keys named; rerun matches")
    func sweep() throws {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-config-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try Scratch.teacherAndStudent(in: d)
        let alone = try CLI.run([
            "train", p("s.kdb"), "--data", Self.digits, "--epochs", "2", "--batch", "32", "--augment", "none", "--eval-split", "eval",
            "--quiet",
            "--seeds", "0,1", "-o", p("alone-s{seed}.kdb"),
        ])
        #expect(alone.status == 0, "\(alone.err)")
        let yaml = """
            bundles: [\(p("t.kdb")), \(p("s.kdb"))]
            data: \(Self.digits)
            epochs: 2
            batch: 32
            augment: none
            eval_split: eval
            teacher_cache_dir: \(p("cache"))
            seeds: [0, 1]
            baseline: \(p("alone-s{seed}.kdb"))
            sweep:
              temperature: [1, 4]
            output: \(p("kd-T{temperature}.kdb"))
            """
        try yaml.write(toFile: p("sweep.yaml"), atomically: true, encoding: .utf8)
        let r = try CLI.run(["distill", "--config", p("sweep.yaml"), "--epochs", "1"])
        #expect(r.status == 0, "\(r.err)")
        let computed = r.err.split(separator: "\n").filter { $0.contains("teacher outputs:") }
        #expect(computed.count == 4 && computed.filter { $0.contains("saved to the on-disk cache") }.count == 1, "\(computed)")
        for t in [1, 4] {
            let doc = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: p("kd-T\(t).summary.json")))) as? [String: Any]
            )
            #expect((doc["runs"] as? [Any])?.count == 2 && doc["mean_eval_accuracy"] is Double && doc["paired_difference"] is Double)
            let resolved = try String(contentsOfFile: p("kd-T\(t)-s1.config.yaml"), encoding: .utf8)
            #expect(resolved.contains("temperature: \(t)") && resolved.contains("seed: 1") && resolved.contains("epochs: 1"), "\(resolved)")
        }
        let rerun = try CLI.run(["rerun", p("kd-T4-s1.kdb")])
        #expect(rerun.status == 0 && rerun.out.contains("rerun matches"), "\(rerun.out)\(rerun.err)")
        try "bundles: [a.kdb, b.kdb]\ndata: x\ntemprature: 3\nfoo: 1\noutput: y.kdb\n".write(
            toFile: p("bad.yaml"), atomically: true, encoding: .utf8)
        let bad = try CLI.run(["distill", "--config", p("bad.yaml")])
        #expect(bad.status == 64 && bad.err.contains("unknown keys 'foo', 'temprature' (did you mean 'temperature'?)"), "\(bad.err)")
    }
}

@Suite("a resumed sweep", .serialized)
struct SweepResumeTests {
    @Test("--resume skips the runs of a sweep that finished, and runs the rest")
    func skipsFinished() throws {
        let d = try Scratch.folder("sweep-resume")
        defer { try? FileManager.default.removeItem(at: d) }
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        #expect(
            try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x8x8", "-o", p("m.kdb")]).status == 0)
        let config =
            "model: \(p("m.kdb"))\ndata: \(Scratch.digits)\nepochs: 1\nquiet: true\noutput: \(p("s-{seed}.kdb"))\nsweep:\n  seed: [0, 1]\n"
        try config.write(toFile: p("sweep.yaml"), atomically: true, encoding: .utf8)
        #expect(try CLI.run(["train", "--config", p("sweep.yaml")]).status == 0)
        try FileManager.default.removeItem(atPath: p("s-1.kdb"))
        let resumed = try CLI.run(["train", "--config", p("sweep.yaml"), "--resume"])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.err.contains("run 1 of 2") && resumed.err.contains("skipped"), "\(resumed.err)")
        #expect(!resumed.err.contains("run 2 of 2"))
        #expect(FileManager.default.fileExists(atPath: p("s-1.kdb")))
    }
}

@Suite("kdtool report", .serialized)
struct ReportCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("one self-contained HTML file: runs, curves, confusion, teacher vs student, provenance, SQNR chart")
    func report() throws {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-report-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        try Scratch.teacherAndStudent(in: d)
        try FileManager.default.createDirectory(atPath: p("runs"), withIntermediateDirectories: true)
        let r = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--data", Self.digits, "--epochs", "2", "--augment", "none", "--eval-split", "eval",
            "--quiet",
            "--no-teacher-cache", "--seeds", "0,1", "-o", p("runs/kd-s{seed}.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        _ = try CLI.run(["quantize-check", p("runs/kd-s0.kdb"), "--data", Self.digits, "-o", p("runs/kd-s0-int8.kdb"), "--max-drop", "100"])
        let rep = try CLI.run(["report", p("runs"), "--data", Self.digits, "-o", p("report.html")])
        #expect(rep.status == 0, "\(rep.err)")
        let html = try String(contentsOfFile: p("report.html"), encoding: .utf8)
        for part in [
            "id=\"runs\"", "id=\"summaries\"", "id=\"loss-chart\"", "id=\"accuracy-chart\"", "id=\"per-class-chart\"", "id=\"confusion\"",
            "id=\"teacher-student\"", "id=\"provenance\"", "id=\"sqnr-chart-0\"", "kd-s0.kdb", "kd-s1.kdb",
        ] {
            #expect(html.contains(part), "missing \(part)")
        }
        #expect(
            !html.contains("http://")
                || html.components(separatedBy: "http://").dropFirst().allSatisfy { $0.hasPrefix("www.w3.org/2000/svg") })
        #expect(!html.contains("<script"), "no scripts, nothing fetched")
        // CI installs Chromium (.ci/run); there its absence is a failure, not a silent pass.
        guard let chromium = Self.chromium else {
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "CI must render the report with headless Chromium; install chromium")
            return
        }
        // Headless Chromium renders it: the DOM it builds holds the charts, and the page logs no console errors.
        let (status, dom, log) = try CLI.exec(
            chromium,
            ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom", "file://" + p("report.html")])
        #expect(status == 0)
        #expect(dom.components(separatedBy: "<svg").count - 1 >= 4, "charts in the rendered DOM")
        #expect(dom.contains("polyline") && dom.contains("class=\"bar\""))
        #expect(!log.contains("CONSOLE"), "console messages: \(log.split(separator: "\n").filter { $0.contains("CONSOLE") }.prefix(3))")
    }
}

@Suite("unlabelled transfer sets and PyTorch-side export checks", .serialized)
struct TransferAndExportTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"
    static let images = try! TestData.imageFolder()

    @Test("distill --no-labels on a flat folder of photos; train on it is refused")
    func unlabelled() throws {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-transfer-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("t.kdb")])
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("s.kdb")])
        let r = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--data", Self.images, "--no-labels", "--split", "all", "--epochs", "2", "--batch", "4",
            "--no-teacher-cache", "-o", p("d.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("unlabelled transfer set") && r.err.contains("computed"), "\(r.out)\(r.err)")
        let t = try CLI.run(["train", p("s.kdb"), "--data", Self.images, "--split", "all", "--epochs", "1", "-o", p("x.kdb")])
        #expect(t.status != 0 && t.err.contains("unlabelled images"), "\(t.err)")
    }

    @Test(
        "export safetensors and npz with a name map; numpy reads them back exactly",
        .enabled(if: FileManager.default.isExecutableFile(atPath: CLI.root.path + "/.build/venv-onnx/bin/python")))
    func numpyReadsExports() throws {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-export-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "resnet8", "--classes", "10", "--input", "1x28x28", "--seed", "3", "-o", p("r.kdb")])
        try #"{"stage1.block1.": "layer1.0.", "fc.": "linear."}"#.write(toFile: p("map.json"), atomically: true, encoding: .utf8)
        for ext in ["safetensors", "npz"] {
            let e = try CLI.run(["export", p("r.kdb"), "--map", p("map.json"), "-o", p("w.\(ext)")])
            #expect(e.status == 0, "\(e.err)")
        }
        _ = try CLI.run(["export", p("r.kdb"), "-o", p("plain.npz")])
        let script = """
            import json, sys, numpy as np
            def safetensors(path):
                b = open(path, "rb").read(); n = int.from_bytes(b[:8], "little"); h = json.loads(b[8:8 + n]); base = 8 + n
                return {k: np.frombuffer(b[base + v["data_offsets"][0]:base + v["data_offsets"][1]], dtype="<f4").reshape(v["shape"])
                        for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
            st = safetensors(sys.argv[1]); z = dict(np.load(sys.argv[2])); plain = dict(np.load(sys.argv[3]))
            assert set(st) == set(z), (sorted(set(st) ^ set(z)))[:5]
            assert "layer1.0.conv1.weight" in st and "linear.weight" in st and "stage1.block1.conv1.weight" not in st
            for k in st: assert np.array_equal(st[k], z[k]), k
            assert np.array_equal(st["layer1.0.conv1.weight"], plain["stage1.block1.conv1.weight"])
            assert st["linear.weight"].shape == (10, 64)
            print("ok", len(st))
            """
        let r = try CLI.exec(
            CLI.root.path + "/.build/venv-onnx/bin/python", ["-c", script, p("w.safetensors"), p("w.npz"), p("plain.npz")])
        #expect(r.status == 0 && r.out.hasPrefix("ok"), "\(r.out)\(r.err)")
    }
}
