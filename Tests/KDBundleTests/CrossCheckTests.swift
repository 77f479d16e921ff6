import Foundation
import Testing

@testable import KDBundle

/// The Python reader (tools/kdb_reader.py) is an independent implementation of the spec.
enum Python {
    /// `KDTOOL_PYTHON`, then the venv `.ci/run` creates, then python3 on PATH — whichever has numpy.
    static let executable: String? = {
        var candidates: [String] = []
        if let p = ProcessInfo.processInfo.environment["KDTOOL_PYTHON"] { candidates.append(p) }
        candidates.append(Repo.root.appendingPathComponent(".build/venv/bin/python3").path)
        candidates += ["/usr/bin/env"]
        for c in candidates {
            let args = c == "/usr/bin/env" ? ["python3", "-c", "import numpy"] : ["-c", "import numpy"]
            if FileManager.default.isExecutableFile(atPath: c), (try? run(c, args).status) == 0 {
                return c
            }
        }
        return nil
    }()

    static var available: Bool {
        // In CI the venv must exist: a missing Python is a failure there, not a skip.
        if executable == nil && ProcessInfo.processInfo.environment["CI"] != nil { return true }
        return executable != nil
    }

    static func run(_ exe: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    static func script(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let exe = try #require(executable, "python3 with numpy is needed (tools/setup creates .build/venv)")
        let pre = exe == "/usr/bin/env" ? ["python3"] : []
        return try run(exe, pre + args)
    }
}

@Suite("Cross-check with the independent Python reader", .enabled(if: Python.available))
struct CrossCheckTests {
    @Test("tensors and digests of Swift-written bundles match tools/kdb_reader.py", arguments: [false, true])
    func swiftWrittenBundles(deflated: Bool) throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("x.kdb").path
        let c = sampleContents(seed: 9, deflate: deflated ? ["TDIR", "GRPH", "LABL", "PREP", "META"] : [])
        let result = try BundleWriter.write(c, to: path)
        let r = try Python.script([Repo.root.appendingPathComponent("tools/kdb_reader.py").path, path, "--json", "--tensors"])
        #expect(r.status == 0, "kdb_reader.py: \(r.err)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        #expect(doc["file_digest"] as? String == result.fileDigest)
        #expect(doc["content_digest"] as? String == result.contentDigest)
        let stats = try #require(doc["tensor_stats"] as? [String: [String: Any]])
        let bundle = try ModelBundle(path: path)
        #expect(stats.count == c.tensors.count)
        for t in bundle.tensors {
            let s = try #require(stats[t.name])
            let sha = try bundle.tensorData(named: t.name).withMemoryRebound(to: UInt8.self) { SHA256.hex(UnsafeRawBufferPointer($0)) }
            #expect(s["sha256"] as? String == sha, "\(t.name) bytes differ")
            let sum = try bundle.floats(named: t.name).reduce(0.0) { $0 + Double($1) }
            let pySum = try #require(s["sum"] as? Double)
            // Float32 sums in a different order: agreement to 1e-4 relative is what the order allows.
            #expect(abs(sum - pySum) <= 1e-4 * max(1, abs(pySum)), "\(t.name): \(sum) vs \(pySum)")
        }
    }

    @Test("the Python reader rejects every invalid fixture with the same code")
    func pythonAgreesOnFixtures() throws {
        let code = """
            import sys; sys.path.insert(0, sys.argv[1]); import kdb_reader as k
            for p in sys.argv[2:]:
                try: k.read(p); print(p, "ACCEPTED")
                except k.KdbError as e: print(p, e.code)
            """
        let files = Repo.fixtureFiles("invalid").map(\.path)
        let r = try Python.script(["-c", code, Repo.root.appendingPathComponent("tools").path] + files)
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n")
        #expect(lines.count == files.count)
        for line in lines {
            let parts = line.split(separator: " ")
            let name = URL(fileURLWithPath: String(parts[0])).lastPathComponent
            #expect(String(parts[1]) == String(name.prefix(3)), "\(name): Python says \(parts[1])")
        }
    }
}
