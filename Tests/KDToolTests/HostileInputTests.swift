import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Replays the hostile-input corpus (`tools/gen_hostile.py` → `Tests/KDToolTests/Hostile/`):
/// every case runs the built binary under a 4 GB address-space limit and its time limit,
/// and must end with an exit code from the README's table (the case's `expect`), never a
/// signal or a hang; output cases must leave the previous file intact.
@Suite("hostile input corpus")
struct HostileInputTests {
    struct Manifest: Decodable {
        var setup: [[String]]
        var cases: [Case]
    }

    struct Case: Decodable {
        var name: String
        var args: [String]
        var expect: [Int32]
        var setup: [[String: Step]]
        var fsize_limit: Int?
        var keep: [String: Step]?
        var note: String
        var seconds: Double
    }

    /// A setup step's or check's value: a path, a list of strings, or a number.
    enum Step: Decodable {
        case text(String)
        case list([String])
        case number(Int)

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) {
                self = .text(s)
            } else if let n = try? c.decode(Int.self) {
                self = .number(n)
            } else {
                let items = try c.decode([StringOrInt].self)
                self = .list(items.map(\.text))
            }
        }

        var text: String {
            if case .text(let s) = self { return s }
            return ""
        }
        var list: [String] {
            if case .list(let l) = self { return l }
            return []
        }
    }

    struct StringOrInt: Decodable {
        var text: String
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { text = s } else { text = String(try c.decode(Int.self)) }
        }
    }

    static let corpus = CLI.root.appendingPathComponent("Tests/KDToolTests/Hostile")

    @Test("every hostile input ends with a documented exit code, no signal, no hang, no lost output")
    func replay() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: Self.corpus.appendingPathComponent("manifest.json")))
        #expect(manifest.cases.count >= 250)
        let work = try Scratch.folder("hostile")
        defer { try? FileManager.default.removeItem(at: work) }
        for item in try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path) {
            try FileManager.default.copyItem(at: Self.corpus.appendingPathComponent(item), to: work.appendingPathComponent(item))
        }
        for args in manifest.setup {
            let r = try Self.run(args, in: work, fsize: nil, timeout: 120)
            try #require(r.status == 0, "setup \(args): \(r.err)")
        }
        var failures: [String] = []
        for c in manifest.cases {
            try Self.prepare(c, in: work)
            let r = try Self.run(c.args, in: work, fsize: c.fsize_limit, timeout: c.seconds)
            var problem: String?
            if r.timedOut {
                problem = "hung (killed after \(c.seconds) s)"
            } else if r.signal != 0 {
                problem = "killed by signal \(r.signal)"
            } else if !c.expect.contains(r.status) {
                problem = "exit \(r.status), expected one of \(c.expect)"
            } else if let keep = c.keep {
                problem = try Self.check(keep, in: work)
            }
            if let problem {
                failures.append("\(c.name): \(problem) — \(r.err.split(separator: "\n").last ?? "")")
            }
        }
        let report = "\(failures.count) of \(manifest.cases.count) cases:\n" + failures.joined(separator: "\n")
        #expect(failures.isEmpty, "\(report)")
    }

    /// Files git cannot hold: FIFOs, links, folders, names that are not UTF-8, large files.
    static func prepare(_ c: Case, in work: URL) throws {
        func p(_ rel: String) -> String { work.appendingPathComponent(rel).path }
        func parent(_ rel: String) throws {
            try FileManager.default.createDirectory(
                atPath: (p(rel) as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        }
        for step in c.setup {
            for (kind, v) in step {
                switch kind {
                case "fifo":
                    try parent(v.text)
                    if access(p(v.text), F_OK) != 0 { #expect(mkfifo(p(v.text), 0o644) == 0) }
                case "symlink":
                    try parent(v.list[0])
                    var st = stat()
                    if lstat(p(v.list[0]), &st) != 0 { #expect(symlink(v.list[1], p(v.list[0])) == 0) }
                case "mkdir": try FileManager.default.createDirectory(atPath: p(v.text), withIntermediateDirectories: true)
                case "write":
                    try parent(v.list[0])
                    try Data(v.list[1].utf8).write(to: URL(fileURLWithPath: p(v.list[0])))
                case "copy":
                    try parent(v.list[1])
                    if access(p(v.list[1]), F_OK) != 0 { try FileManager.default.copyItem(atPath: p(v.list[0]), toPath: p(v.list[1])) }
                case "repeat":
                    try parent(v.list[0])
                    var bytes = Data(v.list[1].utf8)
                    let chunk = Data(v.list[2].utf8)
                    for _ in 0..<(Int(v.list[3]) ?? 0) { bytes.append(chunk) }
                    bytes.append(Data(v.list[4].utf8))
                    try bytes.write(to: URL(fileURLWithPath: p(v.list[0])))
                case "copy_name_hex":
                    // A file name given as bytes (CR/LF, bytes that are not UTF-8): made with open(2) on the raw bytes.
                    try FileManager.default.createDirectory(atPath: p(v.list[0]), withIntermediateDirectories: true)
                    var name = Array(p(v.list[0]).utf8)
                    if name.last != UInt8(ascii: "/") { name.append(UInt8(ascii: "/")) }
                    name += hexBytes(v.list[1])
                    let content = try Data(contentsOf: URL(fileURLWithPath: p(v.list[2])))
                    let fd = (name.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer {
                        open($0.baseAddress!, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                    }
                    #expect(fd >= 0)
                    _ = content.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                default: Issue.record("unknown setup step \(kind) in \(c.name)")
                }
            }
        }
    }

    static func hexBytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
        return out
    }

    /// What an output case must leave behind.
    static func check(_ keep: [String: Step], in work: URL) throws -> String? {
        func p(_ rel: String) -> String { work.appendingPathComponent(rel).path }
        if let path = keep["unchanged"]?.text {
            let now = (try? String(contentsOfFile: p(path), encoding: .utf8)) ?? ""
            if !(now.hasPrefix("old,content") || now.hasPrefix("previous bundle")) {
                return "\(path) was replaced or cut: \(now.prefix(60))"
            }
        }
        if let path = keep["csv_rows"]?.text, case .number(let rows)? = keep["rows"] {
            let records = csvRecords(try Data(contentsOf: URL(fileURLWithPath: p(path))))
            // Header + one record per image, every record with the header's field count.
            if records.count != rows + 1 || Set(records.map(\.count)).count != 1 {
                return "\(path) has \(records.count) records of \(Set(records.map(\.count))) fields, expected \(rows + 1) of one width"
            }
        }
        for path in keep["absent"]?.list ?? [] where FileManager.default.fileExists(atPath: p(path)) {
            return "\(path) was written although no output named it"
        }
        if let path = keep["jsonl_b64"]?.text {
            let text = try String(contentsOfFile: p(path), encoding: .utf8)
            guard let line = text.split(separator: "\n").first(where: { $0.contains("path_b64") }),
                let doc = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let b64 = doc["path_b64"] as? String, let raw = Data(base64Encoded: b64)
            else { return "\(path) has no path_b64 row" }
            let cPath = Array(work.path.utf8) + [UInt8(ascii: "/")] + Array(raw)
            if (cPath.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer({ access($0.baseAddress!, F_OK) }) != 0 {
                return "path_b64 \(b64) does not name the file"
            }
        }
        return nil
    }

    /// RFC 4180 records: quoted fields may hold commas, quotes (doubled) and line breaks.
    static func csvRecords(_ data: Data) -> [[String]] {
        var records: [[String]] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var quoted = false
        var i = data.startIndex
        while i < data.endIndex {
            let c = data[i]
            if quoted {
                if c == 0x22 {
                    if data.index(after: i) < data.endIndex && data[data.index(after: i)] == 0x22 {
                        field.append(0x22)
                        i = data.index(after: i)
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == 0x22 {
                quoted = true
            } else if c == 0x2C {
                fields.append(String(decoding: field, as: UTF8.self))
                field = []
            } else if c == 0x0A {
                fields.append(String(decoding: field, as: UTF8.self))
                records.append(fields)
                fields = []
                field = []
            } else {
                field.append(c)
            }
            i = data.index(after: i)
        }
        return records
    }

    /// Runs kdtool in `work` under `ulimit -v` (4 GB) and, when given, `ulimit -f` with SIGXFSZ
    /// ignored (so a write past the size fails with EFBIG, as on a full disk); kills it after `timeout`.
    static func run(_ args: [String], in work: URL, fsize: Int?, timeout: Double) throws -> (
        status: Int32, signal: Int32, timedOut: Bool, err: String
    ) {
        var script = "ulimit -v 4000000; "
        if let fsize { script += "ulimit -f \(fsize / 1024); trap '' XFSZ; " }
        script += "exec \"$0\" \"$@\""
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", script, CLI.binary.path] + args
        p.currentDirectoryURL = work
        // stderr goes to a file, so a chatty failure can never block on a full pipe.
        let errPath = work.appendingPathComponent(".stderr").path
        FileManager.default.createFile(atPath: errPath, contents: nil)
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        try err.close()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while p.isRunning {
            if Date() > deadline {
                timedOut = true
                kill(p.processIdentifier, SIGKILL)
                break
            }
            usleep(2000)
        }
        p.waitUntilExit()
        let collected = (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data()
        let signal = p.terminationReason == .uncaughtSignal ? p.terminationStatus : 0
        return (
            p.terminationReason == .exit ? p.terminationStatus : -1, timedOut ? 0 : signal, timedOut,
            String(decoding: collected, as: UTF8.self)
        )
    }
}

@Suite("outputs are never lost or shared")
struct OutputSafetyTests {
    @Test("a second run on the same output stops at once (exit 5) instead of interleaving; the first finishes")
    func lock() throws {
        let d = try Scratch.folder("lock")
        defer { try? FileManager.default.removeItem(at: d) }
        let m = d.appendingPathComponent("m.kdb").path
        let out = d.appendingPathComponent("out.kdb").path
        #expect(try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "-o", m]).status == 0)
        let first = Process()
        first.executableURL = CLI.binary
        first.arguments = ["train", m, "--data", Scratch.digits, "--epochs", "300", "--quiet", "-o", out]
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        defer { if first.isRunning { first.terminate() } }
        // The lock is taken before the data is read; wait for the first epoch's metrics line.
        let metrics = d.appendingPathComponent("out.metrics.jsonl").path
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: metrics) && first.isRunning && Date() < deadline { usleep(5000) }
        try #require(first.isRunning, "the first run ended before the second could start")
        let started = Date()
        let second = try CLI.run(["train", m, "--data", Scratch.digits, "--epochs", "1", "--quiet", "-o", out])
        #expect(second.status == 5)
        #expect(second.err.contains("another kdtool run"), "\(second.err)")
        #expect(Date().timeIntervalSince(started) < 10)
        first.terminate()
        first.waitUntilExit()
        // The interrupted run left a checkpoint, and only its own lines in the log.
        let lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n")
        #expect(lines.allSatisfy { $0.hasPrefix("{") && $0.hasSuffix("}") })
    }

    @Test("a run whose output folder is missing stops before any work, with exit 5")
    func missingFolder() throws {
        let d = try Scratch.folder("nodir")
        defer { try? FileManager.default.removeItem(at: d) }
        let m = d.appendingPathComponent("m.kdb").path
        #expect(try CLI.run(["init", "--arch", "mlp", "--hidden", "16", "--classes", "10", "--input", "1x8x8", "-o", m]).status == 0)
        let r = try CLI.run(["train", m, "--data", Scratch.digits, "--epochs", "30", "-o", d.appendingPathComponent("no/out.kdb").path])
        #expect(r.status == 5)
        #expect(r.err.contains("does not exist"), "\(r.err)")
        #expect(!r.err.contains("epoch 1"))
    }
}
