import Foundation
import Testing

@Suite("kdtool quantize-check", .serialized)
struct QuantizeCheckCommandTests {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    func temp() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-quant-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test("int8-per-channel and fp16 on a trained model: report, smaller file, eval runs it; the gate exits 4")
    func endToEnd() throws {
        let d = try temp()
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "512,512", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("m0.kdb"),
        ])
        let t = try CLI.run([
            "train", p("m0.kdb"), "--data", Self.digits, "--epochs", "4", "--batch", "32", "--augment", "none", "--quiet", "-o", p("m.kdb"),
        ])
        #expect(t.status == 0, "\(t.err)")
        var sizes: [String: Double] = [:]
        for scheme in ["int8-per-channel", "int8", "fp16"] {
            let r = try CLI.run([
                "quantize-check", p("m.kdb"), "--data", Self.digits, "--scheme", scheme, "--calibration", "200", "--json", "-o",
                p("q-\(scheme).kdb"),
            ])
            #expect(r.status == 0, "\(scheme): \(r.err)")
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
            let drop = try #require(doc["accuracy_drop_points"] as? Double)
            #expect(drop < 2, "\(scheme) drop \(drop)")
            let layers = try #require(doc["layers"] as? [[String: Any]])
            #expect(layers.count == 3 && layers.allSatisfy { ($0["weight_sqnr_db"] as? Double ?? 0) > 25 })
            let sqnrs = layers.compactMap { $0["activation_sqnr_db"] as? Double }
            #expect(sqnrs == sqnrs.sorted(), "worst layer first")
            sizes[scheme] = try #require(doc["file_size_ratio"] as? Double)
            let real = try FileManager.default.attributesOfItem(atPath: p("q-\(scheme).kdb"))[.size] as! Int
            #expect(real == doc["file_bytes_quantized"] as? Int, "the reported size is the file's")
            let e = try CLI.run(["eval", p("q-\(scheme).kdb"), "--data", Self.digits, "--json"])
            let acc = try #require((try JSONSerialization.jsonObject(with: Data(e.out.utf8)) as? [String: Any])?["accuracy"] as? Double)
            #expect(abs(acc - (doc["accuracy_quantized"] as! Double)) < 1e-9, "eval runs the quantized bundle as the check did")
        }
        #expect(sizes["int8"]! < 0.35 && sizes["int8-per-channel"]! < 0.35 && sizes["fp16"]! < 0.6, "\(sizes)")
        // The gate: one calibration image and ranges clipped at the 60th percentile cost this model accuracy.
        let gate = try CLI.run([
            "quantize-check", p("m.kdb"), "--data", Self.digits, "--scheme", "int8", "--calibration", "1", "--percentile", "60",
            "--max-drop", "0",
        ])
        #expect(gate.status == 4, "exit \(gate.status): \(gate.out)\(gate.err)")
        #expect(gate.err.contains("exceeds --max-drop"))
        let again = try CLI.run(["quantize-check", p("q-int8.kdb"), "--data", Self.digits])
        #expect(again.status == 1 && again.err.contains("already quantized"))
    }
}
