import Foundation
import Testing

/// Runs the built `kdtool` binary the way a user does.
enum CLI {
    static let binary: URL = {
        // The test bundle sits next to the products of the same build.
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("kdtool").path) && dir.path != "/" {
            dir.deleteLastPathComponent()
        }
        return dir.appendingPathComponent("kdtool")
    }()
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func run(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try exec(binary.path, args, stdin: stdin)
    }

    /// Runs any program (Python from the venv, Chromium) the same way.
    static func exec(_ path: String, _ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.currentDirectoryURL = root
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try p.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

/// A fresh temporary folder, and the small digits teacher/student pair several suites start from.
enum Scratch {
    static let digits = CLI.root.path + "/data/digits/digits.csv.gz"

    static func folder(_ prefix: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// `t.kdb` (mlp 32, trained 3 epochs) and `s.kdb` (mlp 12, untrained) in `d`.
    static func teacherAndStudent(in d: URL) throws {
        func p(_ n: String) -> String { d.appendingPathComponent(n).path }
        _ = try CLI.run([
            "init", "--arch", "mlp", "--hidden", "32", "--classes", "10", "--input", "1x8x8", "--seed", "1", "-o", p("t0.kdb"),
        ])
        let t = try CLI.run([
            "train", p("t0.kdb"), "--data", digits, "--epochs", "3", "--batch", "32", "--augment", "none", "--quiet", "-o", p("t.kdb"),
        ])
        precondition(t.status == 0, t.err)
        _ = try CLI.run(["init", "--arch", "mlp", "--hidden", "12", "--classes", "10", "--input", "1x8x8", "--seed", "2", "-o", p("s.kdb")])
    }
}

@Suite("kdtool inspect")
struct InspectCommandTests {
    let allSections = "Spec/fixtures/valid/all-sections.kdb"

    @Test("prints every part of a bundle")
    func text() throws {
        let r = try CLI.run(["inspect", allSections, "--verify"])
        #expect(r.status == 0, "\(r.err)")
        for part in [
            "content digest", "verify          ok", "TDIR", "conv1.weight", "output shape", "total: 282 parameters",
            "Labels (10)", "Preprocessing: 1×8×8", "Verticals (3)", "FSP pairs (1): pool1 → relu2", "Hint layers: relu2",
            "method          train", "Metadata",
        ] {
            #expect(r.out.contains(part), "missing '\(part)'")
        }
    }

    @Test("--json is one document with the documented keys")
    func json() throws {
        let r = try CLI.run(["inspect", allSections, "--json", "--tensor", "fc.weight"])
        #expect(r.status == 0)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        for key in [
            "file", "format", "size", "file_digest", "content_digest", "sections", "tensors", "graph", "labels",
            "preprocessing", "verticals", "fsp_pairs", "hints", "quantization", "provenance", "metadata", "tensor",
        ] {
            #expect(doc.keys.contains(key), "missing key \(key)")
        }
        let graph = try #require(doc["graph"] as? [String: Any])
        let totals = try #require(graph["totals"] as? [String: Any])
        #expect(totals["params"] as? Int == 282)
        let stats = try #require((doc["tensor"] as? [String: Any])?["stats"] as? [String: Any])
        #expect(stats["count"] as? Int == 80)
        #expect(stats["nan"] as? Int == 0)
    }

    @Test("an invalid file gives one line with its error code and exit 2")
    func invalid() throws {
        let r = try CLI.run(["inspect", "Spec/fixtures/invalid/E04-header-checksum.kdb"])
        #expect(r.status == 2)
        #expect(r.out.isEmpty)
        #expect(r.err.contains("KDB-E04 header-checksum"))
        #expect(r.err.contains("E04-header-checksum.kdb"))
        #expect(r.err.split(separator: "\n").count == 1)
        let missing = try CLI.run(["inspect", "no/such/file.kdb"])
        #expect(missing.status == 2)
        #expect(missing.err.contains("KDB-E39"))
    }

    @Test(
        "--verify exits 2 for every content error, as opening does for structural ones",
        arguments: ["E15-non-finite", "E26-nonzero-padding", "E28-file-checksum", "E29-tensor-checksum", "E35-invalid-graph"])
    func verifyMismatch(fixture: String) throws {
        let r = try CLI.run(["inspect", "Spec/fixtures/invalid/\(fixture).kdb", "--verify"])
        #expect(r.status == 2, "\(r.err)")
        #expect(r.err.contains("KDB-" + fixture.prefix(3)))
    }

    @Test("without --verify only structure is checked")
    func structureOnly() throws {
        let plain = try CLI.run(["inspect", "Spec/fixtures/invalid/E29-tensor-checksum.kdb"])
        #expect(plain.status == 0, "without --verify only structure is checked")
    }

    @Test("usage errors exit 64")
    func usage() throws {
        #expect(try CLI.run(["inspect"]).status == 64)
        #expect(try CLI.run(["inspect", allSections, "--bogus"]).status == 64)
    }
}
