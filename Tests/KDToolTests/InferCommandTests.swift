import Foundation
import KDTestSupport
import Testing

@Suite("kdtool infer")
struct InferCommandTests {
    static let images = try! TestData.imageFolder()

    /// An untrained 3×16×16 model: the CLI's plumbing is under test, not accuracy.
    func model() throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-infer-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        let path = d.appendingPathComponent("m.kdb").path
        let r = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "8", "--classes", "3", "--input", "3x16x16", "--labels", "cat,dog,bird", "-o", path,
        ])
        #expect(r.status == 0, "\(r.err)")
        return path
    }

    @Test("CSV rows for the shipped photos, errors for GIF/TIFF, exit 3")
    func csv() throws {
        let r = try CLI.run(["infer", try model(), Self.images, "--top-k", "2", "--quiet"])
        #expect(r.status == 3)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.first == "path,label1,prob1,label2,prob2,error")
        #expect(lines.count == 15, "header + 14 files")
        let gif = try #require(lines.first { $0.contains(".gif") })
        #expect(gif.hasSuffix("unsupported: GIF images are not supported (PNG or JPEG)"))
        let png = try #require(lines.first { $0.contains("camera.png") })
        #expect(png.split(separator: ",").count == 5, "no error field")
        #expect(["cat", "dog", "bird"].contains(String(png.split(separator: ",")[1])))
        #expect(r.err.contains("kdtool: warning:") && r.err.contains("multipage.tif"))
    }

    @Test("--strict stops at the first failure with exit 1; all-good runs exit 0")
    func strictAndSuccess() throws {
        let m = try model()
        let strict = try CLI.run(["infer", m, Self.images, "--strict", "--quiet"])
        #expect(strict.status == 1)
        #expect(!strict.out.contains("retina.jpg"), "nothing after the first failure (multipage.tif)")
        let good = try CLI.run(["infer", m, Self.images + "/camera.png", Self.images + "/china.jpg", "--quiet"])
        #expect(good.status == 0)
    }

    @Test("paths from stdin, JSON lines to a file")
    func stdinAndJSONL() throws {
        let m = try model()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pred-\(UUID().uuidString.prefix(6)).jsonl").path
        let list = [Self.images + "/horse.png", Self.images + "/no_time_for_that_tiny.gif", Self.images + "/rocket.jpg"].joined(
            separator: "\n")
        let r = try CLI.run(["infer", m, "-", "--format", "jsonl", "--top-k", "3", "-o", out], stdin: list + "\n")
        #expect(r.status == 3)
        let rows = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(rows.count == 3)
        #expect((rows[0]["path"] as? String)?.hasSuffix("horse.png") == true)
        #expect((rows[0]["top"] as? [[String: Any]])?.count == 3)
        #expect((rows[1]["error"] as? [String: Any])?["kind"] as? String == "unsupported")
        #expect(r.err.contains("3 images: 2 ok, 1 failed"))
    }

    @Test("--threads 1 and --threads 2 print the same rows")
    func threads() throws {
        let m = try model()
        let a = try CLI.run(["infer", m, Self.images, "--threads", "1", "--top-k", "3", "--quiet"])
        let b = try CLI.run(["infer", m, Self.images, "--threads", "2", "--top-k", "3", "--quiet"])
        #expect(a.out == b.out && !a.out.isEmpty)
    }

    @Test("--quantized refuses a float bundle; a bad bundle exits 2")
    func refusals() throws {
        let q = try CLI.run(["infer", try model(), Self.images, "--quantized"])
        #expect(q.status == 1 && q.err.contains("no quantized tensors"))
        let bad = try CLI.run(["infer", "Spec/fixtures/invalid/E01-bad-magic.kdb", Self.images])
        #expect(bad.status == 2 && bad.err.contains("KDB-E01"))
    }
}
