/// A small JSON reader for kdtool's own side files (verticals): objects → [String: Any], arrays →
/// [Any], numbers → Double, strings, booleans, null → `MiniJSON.Null`. Depth is limited.
public enum MiniJSON {
    public struct Null: Sendable {}
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ bytes: [UInt8]) throws -> Any {
        var p = Parser(b: bytes, i: 0)
        let v = try p.value(depth: 0)
        p.space()
        guard p.i == bytes.count else { throw p.fail("trailing characters") }
        return v
    }

    struct Parser {
        let b: [UInt8]
        var i: Int

        func fail(_ what: String) -> ParseError { ParseError(description: "\(what) at byte \(i)") }

        mutating func space() { while i < b.count, [0x20, 0x0a, 0x0d, 0x09].contains(b[i]) { i += 1 } }

        mutating func expect(_ c: UInt8) throws {
            space()
            guard i < b.count, b[i] == c else { throw fail("expected '\(Character(UnicodeScalar(c)))'") }
            i += 1
        }

        mutating func value(depth: Int) throws -> Any {
            guard depth < 64 else { throw fail("nesting too deep") }
            space()
            guard i < b.count else { throw fail("unexpected end") }
            switch b[i] {
            case UInt8(ascii: "{"):
                i += 1
                var out: [String: Any] = [:]
                space()
                if i < b.count, b[i] == UInt8(ascii: "}") {
                    i += 1
                    return out
                }
                while true {
                    space()
                    let k = try string()
                    try expect(UInt8(ascii: ":"))
                    out[k] = try value(depth: depth + 1)
                    space()
                    guard i < b.count else { throw fail("unterminated object") }
                    if b[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    try expect(UInt8(ascii: "}"))
                    return out
                }
            case UInt8(ascii: "["):
                i += 1
                var out: [Any] = []
                space()
                if i < b.count, b[i] == UInt8(ascii: "]") {
                    i += 1
                    return out
                }
                while true {
                    out.append(try value(depth: depth + 1))
                    space()
                    guard i < b.count else { throw fail("unterminated array") }
                    if b[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    try expect(UInt8(ascii: "]"))
                    return out
                }
            case UInt8(ascii: "\""): return try string()
            case UInt8(ascii: "t"): return try word("true", true)
            case UInt8(ascii: "f"): return try word("false", false)
            case UInt8(ascii: "n"): return try word("null", Null())
            default: return try number()
            }
        }

        mutating func word(_ w: String, _ v: Any) throws -> Any {
            let u = Array(w.utf8)
            guard i + u.count <= b.count, Array(b[i..<(i + u.count)]) == u else { throw fail("invalid literal") }
            i += u.count
            return v
        }

        mutating func number() throws -> Double {
            let start = i
            while i < b.count, "+-0123456789.eE".utf8.contains(b[i]) { i += 1 }
            guard i > start, let d = Double(String(decoding: b[start..<i], as: UTF8.self)) else { throw fail("invalid number") }
            return d
        }

        mutating func string() throws -> String {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string") }
            i += 1
            var out: [UInt8] = []
            while i < b.count, b[i] != UInt8(ascii: "\"") {
                if b[i] == UInt8(ascii: "\\") {
                    i += 1
                    guard i < b.count else { break }
                    switch b[i] {
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "u"):
                        guard i + 4 < b.count, let code = UInt32(String(decoding: b[(i + 1)...(i + 4)], as: UTF8.self), radix: 16) else {
                            throw fail("invalid \\u escape")
                        }
                        out += Array(String(UnicodeScalar(code).map(Character.init) ?? "\u{FFFD}").utf8)
                        i += 4
                    default: out.append(b[i])
                    }
                } else {
                    out.append(b[i])
                }
                i += 1
            }
            guard i < b.count else { throw fail("unterminated string") }
            i += 1
            return String(decoding: out, as: UTF8.self)
        }
    }
}
