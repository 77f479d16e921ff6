import Foundation
import Testing

@Suite("kdtool distill", .serialized)
struct DistillCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    func temp() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-distill-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test("KD end to end on the digits: provenance names teacher and student, teacher outputs are cached")
    func kd() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "64", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("t0.kdb"),
        ])
        let t = try CLI.run([
            "train", p("t0.kdb"), "--data", Self.digits, "--epochs", "5", "--batch", "32", "--augment", "none", "--quiet", "-o", p("t.kdb"),
        ])
        #expect(t.status == 0, "\(t.err)")
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "12", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("s.kdb")])
        let r = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--data", Self.digits, "--epochs", "3", "--batch", "32", "--augment", "none", "-T", "4",
            "--eval-split", "eval", "-o", p("kd.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("reused from the cache") && !r.err.contains(" 0 reused"), "epochs 2 and 3 reuse the teacher's outputs")
        let inspect = try CLI.run(["inspect", p("kd.kdb"), "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])
        let prov = try #require(doc["provenance"] as? [String: Any])
        #expect(prov["method"] as? String == "kd")
        let roles = (prov["parents"] as? [[String: Any]])?.compactMap { $0["role"] as? String }
        #expect(roles == ["teacher", "student"])
        let hp = try #require(prov["hyperparameters"] as? [String: Any])
        #expect(hp["temperature"] as? Double == 4 && hp["alpha"] as? Double == 0.9)
        let e = try CLI.run(["eval", p("kd.kdb"), "--data", Self.digits, "--json"])
        let acc = try #require((try JSONSerialization.jsonObject(with: Data(e.out.utf8)) as? [String: Any])?["accuracy"] as? Double)
        #expect(acc > 0.8, "distilled student accuracy \(acc)")
    }

    @Test("deep mutual learning: two peers train together and each gets a bundle with its provenance")
    func dml() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("a.kdb")])
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "24", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("b.kdb")])
        let r = try CLI.run([
            "distill", p("a.kdb"), p("b.kdb"), "--method", "dml", "--data", Self.digits, "--epochs", "3", "--batch", "32", "--augment",
            "none",
            "--eval-split", "eval", "-o", p("out"),
        ])
        #expect(r.status == 0, "\(r.err)")
        for peer in ["peer1", "peer2"] {
            let inspect = try CLI.run(["inspect", p("out/\(peer).kdb"), "--json"])
            let prov = try #require(
                (try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])?["provenance"] as? [String: Any])
            #expect(prov["method"] as? String == "dml")
            #expect((prov["parents"] as? [[String: Any]])?.compactMap { $0["role"] as? String } == ["init", "peer"])
            let acc = try #require((prov["metrics"] as? [String: Any])?["eval_accuracy"] as? Double)
            #expect(acc > 0.7, "\(peer) eval accuracy \(acc)")
        }
        let metrics = try String(contentsOfFile: p("out/metrics.jsonl"), encoding: .utf8)
        #expect(metrics.split(separator: "\n").count == 6, "3 epochs × 2 peers")
    }

    @Test("FitNets: hint stage then distillation; the guided layer is recorded and the regressor dropped")
    func fitnets() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "48", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("t0.kdb"),
        ])
        _ = try CLI.run(["train", p("t0.kdb"), "--data", Self.digits, "--epochs", "3", "--batch", "32", "--quiet", "-o", p("t.kdb")])
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "24,24", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("s.kdb"),
        ])
        let r = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--method", "fitnets", "--data", Self.digits, "--stage1-epochs", "2", "--stage2-epochs", "3",
            "--batch", "32", "--eval-split", "eval", "-o", p("f.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("FitNets stage 1: hint relu1 [48] ← guided relu2 [24]"))
        #expect(!FileManager.default.fileExists(atPath: p("f.stage1.kdb")), "the stage-1 bundle is removed after stage 2")
        let inspect = try CLI.run(["inspect", p("f.kdb"), "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])
        #expect((doc["provenance"] as? [String: Any])?["method"] as? String == "fitnets")
        #expect(((doc["hints"] as? [String: Any])?["guided"] as? [String]) == ["relu2"])
        let names = (doc["tensors"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        #expect(!names.contains { $0.hasPrefix("fitnets.regressor") })
        let bad = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--method", "fitnets", "--guided", "nope", "--data", Self.digits, "-o", p("x.kdb"),
        ])
        #expect(bad.status == 1 && bad.err.contains("no layer 'nope'"))
    }

    @Test("FSP: stage 1 on the teacher's FSP matrices, then the task; the pairs are recorded; mismatched pairs are refused")
    func fsp() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "resnet14", "--width", "0.5", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("t0.kdb"),
        ])
        _ = try CLI.run(["train", p("t0.kdb"), "--data", Self.digits, "--epochs", "2", "--batch", "32", "--quiet", "-o", p("t.kdb")])
        _ = try CLI.run([
            "init", "--arch", "resnet8", "--width", "0.5", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("s.kdb"),
        ])
        let r = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--method", "fsp", "--data", Self.digits, "--stage1-epochs", "2", "--epochs", "1",
            "--batch", "32", "--augment", "none", "--shuffle-fsp", "3", "--eval-split", "eval", "-o", p("fsp.kdb"),
        ])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("3 pairs") && r.err.contains("8×16"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: p("fsp.stage1.kdb")), "the stage-1 bundle is removed at the end")
        let inspect = try CLI.run(["inspect", p("fsp.kdb"), "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(inspect.out.utf8)) as? [String: Any])
        let prov = try #require(doc["provenance"] as? [String: Any])
        #expect(prov["method"] as? String == "fsp")
        let hp = try #require(prov["hyperparameters"] as? [String: Any])
        #expect((hp["fsp_pairs"] as? [String])?.count == 3 && hp["shuffle_fsp"] as? Int == 3, "\(hp)")
        let acc = try #require((prov["metrics"] as? [String: Any])?["eval_accuracy"] as? Double)
        #expect(acc > 0.5, "FSP student accuracy \(acc)")
        let stage1 = try String(contentsOfFile: p("fsp.metrics.jsonl"), encoding: .utf8)
        #expect(stage1.contains("\"fsp\""))

        _ = try CLI.run(["init", "--arch", "resnet8", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("wide.kdb")])
        let bad = try CLI.run(["distill", p("t.kdb"), p("wide.kdb"), "--method", "fsp", "--data", Self.digits, "-o", p("x.kdb")])
        #expect(bad.status == 1 && bad.err.contains("FSP matrices differ in size") && bad.err.contains("16×16"), "\(bad.err)")
        let missing = try CLI.run([
            "distill", p("t.kdb"), p("s.kdb"), "--method", "fsp", "--fsp-pairs", "relu1:nope", "--data", Self.digits, "-o", p("x.kdb"),
        ])
        #expect(missing.status == 1 && missing.err.contains("'nope'"), "\(missing.err)")
    }

    @Test("KC: sigmoid specialist teachers per vertical → one student with an SC head; AP per vertical; specialists + KL combination")
    func kcAndSpecialists() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        let vjson =
            #"{"verticals": [{"name": "a", "labels": ["0", "6", "8", "3"]}, {"name": "b", "labels": ["1", "4", "7", "9"]}, {"name": "c", "labels": ["2", "5"]}]}"#
        try vjson.write(toFile: p("v.json"), atomically: true, encoding: .utf8)
        var teachers: [String] = []
        for (i, c) in ["0,6,8,3", "1,4,7,9", "2,5"].enumerated() {
            let n = c.split(separator: ",").count
            _ = try CLI.run([
                "init", "--arch", "mlp", "--hidden", "32", "--classes", "\(n)", "--input", "1x8x8", "--seed", "\(i)", "-o",
                p("t\(i).init.kdb"),
            ])
            let r = try CLI.run([
                "train", p("t\(i).init.kdb"), "--data", Self.digits, "--loss", "sigmoid", "--classes", c, "--epochs", "5", "--batch", "32",
                "--quiet", "-o", p("t\(i).kdb"),
            ])
            #expect(r.status == 0, "\(r.err)")
            teachers.append(p("t\(i).kdb"))
        }
        let ti = try CLI.run(["inspect", teachers[2], "--json"])
        #expect(ti.out.contains("\"sigmoid\""), "the teacher's graph records sigmoid outputs")
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "--seed", "9", "-o", p("s.kdb")])
        let noV = try CLI.run(["distill"] + teachers + [p("s.kdb"), "--method", "kc", "--data", Self.digits, "-o", p("x.kdb")])
        #expect(noV.status == 1 && noV.err.contains("kc needs verticals"), "\(noV.err)")
        let kc = try CLI.run(
            ["distill"] + teachers + [
                p("s.kdb"), "--method", "kc", "--verticals", p("v.json"), "--top-k", "2", "--head", "fc-sc", "--self-paced", "vertical",
                "--head-width", "16", "--data", Self.digits, "--epochs", "6", "--batch", "32", "--augment", "none", "-o", p("kc.kdb"),
            ])
        #expect(kc.status == 0, "\(kc.err)")
        let e = try CLI.run(["eval", p("kc.kdb"), "--data", Self.digits, "--verticals", p("v.json"), "--json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(e.out.utf8)) as? [String: Any])
        #expect((doc["verticals"] as? [Any])?.count == 3)
        let mAP = try #require(doc["map"] as? Double)
        #expect(mAP > 0.6, "student mAP \(mAP)")
        let spec = try CLI.run(["eval", teachers[0], "--data", Self.digits, "--verticals", p("v.json"), "--json"])
        #expect((try JSONSerialization.jsonObject(with: Data(spec.out.utf8)) as? [String: Any])?["verticals"] as? [Any] != nil)

        _ = try CLI.run(["train", p("s.kdb"), "--data", Self.digits, "--epochs", "4", "--batch", "32", "--quiet", "-o", p("g.kdb")])
        let sp = try CLI.run([
            "distill", p("g.kdb"), "--method", "specialist", "--verticals", p("v.json"), "--data", Self.digits, "--epochs", "2",
            "--batch", "32", "--quiet", "-o", p("specs"),
        ])
        #expect(sp.status == 0, "\(sp.err)")
        let comb = try CLI.run(["eval", p("g.kdb"), "--data", Self.digits, "--specialists", p("specs"), "--json"])
        let c = try #require(try JSONSerialization.jsonObject(with: Data(comb.out.utf8)) as? [String: Any])
        #expect((c["specialists"] as? [Any])?.count == 3)
        #expect((c["combined_accuracy"] as? Double ?? 0) > 0.7, "\(comb.out)")
        #expect((c["by_covering_specialists"] as? [Any])?.isEmpty == false)
    }

    @Test("verticals: a JSON partition of the classes into --k groups")
    func verticals() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "-o", p("g0.kdb")])
        _ = try CLI.run(["train", p("g0.kdb"), "--data", Self.digits, "--epochs", "3", "--batch", "32", "--quiet", "-o", p("g.kdb")])
        let r = try CLI.run(["verticals", p("g.kdb"), "--data", Self.digits, "--k", "3", "-o", p("v.json")])
        #expect(r.status == 0, "\(r.err)")
        let doc = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: p("v.json")))) as? [String: Any])
        let groups = try #require(doc["verticals"] as? [[String: Any]])
        #expect(groups.count == 3)
        let classes = groups.flatMap { ($0["classes"] as? [Int]) ?? [] }
        #expect(classes.sorted() == Array(0..<10))
        #expect((doc["generalist"] as? String)?.count == 64)
        #expect(try CLI.run(["verticals", p("g.kdb"), "--data", Self.digits, "--k", "11", "-o", p("x.json")]).status == 64)
    }

    @Test("mismatched teacher and student are refused before any work, naming both")
    func mismatches() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x8x8", "-o", p("a.kdb")])
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x9x9", "-o", p("b.kdb")])
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "8", "--classes", "10", "--input", "1x8x8", "--labels", "a,b,c,d,e,f,g,h,i,j", "-o",
            p("c.kdb"),
        ])
        let shape = try CLI.run(["distill", p("a.kdb"), p("b.kdb"), "--data", Self.digits, "-o", p("o.kdb")])
        #expect(shape.status == 1 && shape.err.contains("[1, 8, 8]") && shape.err.contains("[1, 9, 9]"))
        let labels = try CLI.run(["distill", p("a.kdb"), p("c.kdb"), "--data", Self.digits, "-o", p("o.kdb")])
        #expect(labels.status == 1 && labels.err.contains("label their classes differently"))
        #expect(try CLI.run(["distill", p("a.kdb"), "--data", Self.digits, "-o", p("o.kdb")]).status == 64)
        // A fresh student (init's numbered classes) takes the teacher's names; `distil` is the same command.
        let fresh = try CLI.run(["distil", p("c.kdb"), p("a.kdb"), "--data", Self.digits, "--epochs", "1", "--quiet", "-o", p("n.kdb")])
        #expect(fresh.status == 0, "\(fresh.err)")
        let inspected = try CLI.run(["inspect", p("n.kdb")])
        #expect(inspected.out.contains("a, b, c, d, e"), "\(inspected.out)")
    }
}
