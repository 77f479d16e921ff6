/// Small text helpers for terminal tables.
enum Text {
    /// 1234567 → "1,234,567".
    static func grouped(_ n: Int) -> String {
        let s = String(abs(n))
        var out = ""
        for (i, c) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return n < 0 ? "-" + out : out
    }

    /// 1536 → "1.5 KiB".
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u + 1 < units.count {
            v /= 1024
            u += 1
        }
        return u == 0 ? "\(n) B" : fixed(v, 1) + " " + units[u]
    }

    /// Fixed-point formatting without Foundation.
    static func fixed(_ v: Double, _ digits: Int) -> String {
        guard v.isFinite else { return "\(v)" }
        if abs(v) >= 1e15 { return number(v) }
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (abs(v) * p).rounded()
        let whole = Int(r / p)
        var frac = String(Int(r.truncatingRemainder(dividingBy: p)))
        while frac.count < digits { frac = "0" + frac }
        let sign = v < 0 && r != 0 ? "-" : ""
        return digits == 0 ? "\(sign)\(whole)" : "\(sign)\(whole).\(frac)"
    }

    /// Compact scientific-ish formatting for statistics.
    static func number(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1e5 || abs(v) < 1e-3 {
            var e = 0
            var m = abs(v)
            while m >= 10 {
                m /= 10
                e += 1
            }
            while m < 1 {
                m *= 10
                e -= 1
            }
            return (v < 0 ? "-" : "") + fixed(m, 4) + "e" + String(e)
        }
        return fixed(v, 6)
    }

    static func shape(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }

    /// Left-aligned columns; `right` marks columns to right-align (numbers).
    static func table(_ header: [String], _ rows: [[String]], right: Set<Int> = [], indent: String = "  ") -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            var out = indent
            for (i, c) in cells.enumerated() {
                let padding = String(repeating: " ", count: max(0, widths[i] - c.count))
                out += right.contains(i) ? padding + c : c + (i + 1 < cells.count ? padding : "")
                if i + 1 < cells.count { out += "  " }
            }
            return out
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}
