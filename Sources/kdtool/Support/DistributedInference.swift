import KDInference
import KDTensor

/// One input's output as `infer` renders it: a row of text (CSV, JSON lines) or of a table, and
/// for an image that failed, the warning to print.
struct Row {
    var failed: Bool
    var warning: String?
    var text: String?
    var table: [String]?
}

/// `infer` over the ranks of an MPI job. Rank 0 reads the input list (files, folders, or paths on
/// stdin) a window at a time and sends each window's paths to every rank; rank r classifies the
/// r-th contiguous share of the window; rank 0 gathers the rendered rows and writes them in input
/// order, so the output is the one a single process writes. Memory stays bounded by the window.
struct DistributedInference {
    let world: World
    /// Paths per rank per round.
    let window: Int

    func run(
        predictor: Predictor, next: () throws -> String?, render: (Prediction) -> Row, take: (Row) -> Bool, progress: (Int) -> Void
    ) throws {
        var done = 0
        while true {
            var paths: [String] = []
            if world.isRoot {
                while paths.count < window * world.size, let p = try next() { paths.append(p) }
            }
            paths = try Self.strings(world.broadcast(Self.bytes(paths), what: "the next input paths"))
            if paths.isEmpty { return }
            let n = paths.count
            let mine = Array(paths[(n * world.rank / world.size)..<(n * (world.rank + 1) / world.size)])
            var rows: [Row] = []
            try predictor.run(mine) { p in
                rows.append(render(p))
                return true
            }
            var stop = false
            if let parts = try world.gather(Self.bytes(rows), what: "the rows") {
                for part in parts {
                    for row in try Self.rows(part) where !stop {
                        if !take(row) { stop = true }
                        done += 1
                    }
                }
                progress(done)
            }
            if try world.agree(stop, what: "whether to stop") { return }
        }
    }

    // MARK: Wire format: length-prefixed UTF-8 fields (any byte may occur in a path).

    static func append(_ s: String, to out: inout [UInt8]) {
        let u = Array(s.utf8)
        let n = UInt32(u.count)
        out += [UInt8(n & 0xff), UInt8(n >> 8 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 24)]
        out += u
    }

    static func field(_ bytes: [UInt8], _ at: inout Int) throws -> String {
        guard bytes.count - at >= 4 else { throw CollectiveError("a rank sent a truncated message") }
        let n = Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
        at += 4
        guard bytes.count - at >= n else { throw CollectiveError("a rank sent a truncated message") }
        defer { at += n }
        return String(decoding: bytes[at..<(at + n)], as: UTF8.self)
    }

    static func bytes(_ strings: [String]) -> [UInt8] {
        var out: [UInt8] = []
        for s in strings { append(s, to: &out) }
        return out
    }

    static func strings(_ bytes: [UInt8]) throws -> [String] {
        var out: [String] = []
        var at = 0
        while at < bytes.count { out.append(try field(bytes, &at)) }
        return out
    }

    /// A row: flags ("f" failed, "w" warning, "t" text, "b" table), then those fields.
    static func bytes(_ rows: [Row]) -> [UInt8] {
        var out: [UInt8] = []
        for r in rows {
            append(
                (r.failed ? "f" : "") + (r.warning != nil ? "w" : "") + (r.text != nil ? "t" : "") + (r.table != nil ? "b" : ""), to: &out)
            if let w = r.warning { append(w, to: &out) }
            if let t = r.text { append(t, to: &out) }
            if let b = r.table { out += bytes([String(b.count)] + b) }
        }
        return out
    }

    static func rows(_ bytes: [UInt8]) throws -> [Row] {
        var out: [Row] = []
        var at = 0
        while at < bytes.count {
            let flags = try field(bytes, &at)
            var r = Row(failed: flags.contains("f"))
            if flags.contains("w") { r.warning = try field(bytes, &at) }
            if flags.contains("t") { r.text = try field(bytes, &at) }
            if flags.contains("b") {
                guard let n = Int(try field(bytes, &at)), n >= 0, n <= 16 else { throw CollectiveError("a rank sent a malformed row") }
                r.table = try (0..<n).map { _ in try field(bytes, &at) }
            }
            out.append(r)
        }
        return out
    }
}
