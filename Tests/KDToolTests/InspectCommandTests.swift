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
        let p = Process()
        p.executableURL = binary
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

    @Test("--verify exits 1 when a checksum does not match")
    func verifyMismatch() throws {
        let r = try CLI.run(["inspect", "Spec/fixtures/invalid/E29-tensor-checksum.kdb", "--verify"])
        #expect(r.status == 1)
        #expect(r.err.contains("KDB-E29"))
        let plain = try CLI.run(["inspect", "Spec/fixtures/invalid/E29-tensor-checksum.kdb"])
        #expect(plain.status == 0, "without --verify only structure is checked")
    }

    @Test("usage errors exit 64")
    func usage() throws {
        #expect(try CLI.run(["inspect"]).status == 64)
        #expect(try CLI.run(["inspect", allSections, "--bogus"]).status == 64)
    }
}
