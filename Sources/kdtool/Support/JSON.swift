import KDBundle

/// A JSON document with ordered object keys, so `--json` output is stable for scripts and diffs.
indirect enum JSON: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    func render(indent: Int = 0, pretty: Bool = true) -> String {
        var out = ""
        write(to: &out, indent: indent, pretty: pretty)
        return out
    }

    private func write(to out: inout String, indent: Int, pretty: Bool) {
        let pad = pretty ? String(repeating: "  ", count: indent + 1) : ""
        let end = pretty ? "\n" + String(repeating: "  ", count: indent) : ""
        let nl = pretty ? "\n" : ""
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .number(let d):
            if d.isFinite {
                out += d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : "\(d)"
            } else {
                out += "null"
            }
        case .string(let s): JSON.escape(s, into: &out)
        case .array(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "[" + nl
            for (i, item) in items.enumerated() {
                out += pad
                item.write(to: &out, indent: indent + 1, pretty: pretty)
                if i + 1 < items.count { out += "," }
                out += nl
            }
            out += end.dropFirst(pretty ? 1 : 0) + "]"
        case .object(let entries):
            if entries.isEmpty {
                out += "{}"
                return
            }
            out += "{" + nl
            for (i, (k, v)) in entries.enumerated() {
                out += pad
                JSON.escape(k, into: &out)
                out += pretty ? ": " : ":"
                v.write(to: &out, indent: indent + 1, pretty: pretty)
                if i + 1 < entries.count { out += "," }
                out += nl
            }
            out += end.dropFirst(pretty ? 1 : 0) + "}"
        }
    }

    static func escape(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    /// A bundle metadata value as JSON (f32/i64 arrays become arrays of numbers).
    init(_ v: Value) {
        switch v {
        case .uint(let x): self = x <= UInt64(Int.max) ? .int(Int(x)) : .number(Double(x))
        case .int(let x): self = .int(Int(x))
        case .float(let x): self = .number(x)
        case .bool(let x): self = .bool(x)
        case .string(let x): self = .string(x)
        case .array(let xs): self = .array(xs.map(JSON.init))
        case .map(let m): self = .object(m.keys.sorted().map { ($0, JSON(m[$0]!)) })
        case .floats(let xs): self = .array(xs.map { .number(Double($0)) })
        case .ints(let xs): self = .array(xs.map { .int(Int($0)) })
        }
    }
}
