#if canImport(Glibc)
    import Glibc
#endif

/// Small inline-SVG charts for `kdtool report` (no scripts, no external resources).
enum SVG {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    static func num(_ v: Double) -> String { Text.fixed(v, 1) }

    struct Series {
        var name: String
        var points: [(x: Double, y: Double)]
        var dashed = false
    }

    /// A line chart with axes, ticks, optional vertical markers (stage boundaries) and a legend
    /// below the plot (two columns), where it cannot cover a curve.
    static func lineChart(
        title: String, xLabel: String, yLabel: String, series: [Series], markers: [(x: Double, label: String)] = [], logY: Bool = false,
        width: Int = 560, height: Int = 300, id: String
    ) -> String {
        let all = series.flatMap(\.points).filter { $0.y.isFinite && (!logY || $0.y > 0) }
        guard !all.isEmpty else { return "<p class=\"empty\">\(escape(title)): no data</p>" }
        let tf: (Double) -> Double = logY ? { log10Safe($0) } : { $0 }
        var (x0, x1) = (all.map(\.x).min()!, all.map(\.x).max()!)
        var (y0, y1) = (all.map { tf($0.y) }.min()!, all.map { tf($0.y) }.max()!)
        if x1 == x0 { x1 = x0 + 1 }
        if y1 == y0 {
            y0 -= 0.5
            y1 += 0.5
        }
        let pad = (y1 - y0) * 0.05
        y0 -= pad
        y1 += pad
        let (l, r, t, b) = (56.0, 16.0, 28.0, 40.0)
        let w = Double(width) - l - r
        let h = Double(height) - t - b
        let shown = Array(series.enumerated().prefix(12))
        let legendRows = (shown.count + 1) / 2
        let total = height + legendRows * 15 + (legendRows > 0 ? 4 : 0)
        func px(_ x: Double) -> Double { l + (x - x0) / (x1 - x0) * w }
        func py(_ y: Double) -> Double { t + (1 - (tf(y) - y0) / (y1 - y0)) * h }
        var s =
            "<svg class=\"chart\" id=\"\(id)\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(total)\" viewBox=\"0 0 \(width) \(total)\" role=\"img\" aria-label=\"\(escape(title))\">"
        s += "<text x=\"\(num(l))\" y=\"18\" class=\"title\">\(escape(title))</text>"
        s += "<rect x=\"\(num(l))\" y=\"\(num(t))\" width=\"\(num(w))\" height=\"\(num(h))\" class=\"frame\"/>"
        for i in 0...4 {
            let yv = y0 + (y1 - y0) * Double(i) / 4
            let yy = t + (1 - Double(i) / 4) * h
            let label = logY ? Text.number(pow10(yv)) : (abs(y1 - y0) < 5 ? Text.fixed(yv, 3) : Text.fixed(yv, 1))
            s += "<line x1=\"\(num(l))\" x2=\"\(num(l + w))\" y1=\"\(num(yy))\" y2=\"\(num(yy))\" class=\"grid\"/>"
            s += "<text x=\"\(num(l - 4))\" y=\"\(num(yy + 4))\" class=\"tick\" text-anchor=\"end\">\(label)</text>"
            let xv = x0 + (x1 - x0) * Double(i) / 4
            s +=
                "<text x=\"\(num(l + w * Double(i) / 4))\" y=\"\(num(t + h + 14))\" class=\"tick\" text-anchor=\"middle\">\(Text.fixed(xv, x1 - x0 < 8 ? 1 : 0))</text>"
        }
        s += "<text x=\"\(num(l + w / 2))\" y=\"\(height - 6)\" class=\"axis\" text-anchor=\"middle\">\(escape(xLabel))</text>"
        s +=
            "<text x=\"12\" y=\"\(num(t + h / 2))\" class=\"axis\" text-anchor=\"middle\" transform=\"rotate(-90 12 \(num(t + h / 2)))\">\(escape(yLabel))</text>"
        for m in markers {
            s += "<line x1=\"\(num(px(m.x)))\" x2=\"\(num(px(m.x)))\" y1=\"\(num(t))\" y2=\"\(num(t + h))\" class=\"marker\"/>"
            s += "<text x=\"\(num(px(m.x) + 3))\" y=\"\(num(t + 12))\" class=\"tick\">\(escape(m.label))</text>"
        }
        for (i, se) in series.enumerated() {
            let pts = se.points.filter { $0.y.isFinite && (!logY || $0.y > 0) }
            guard !pts.isEmpty else { continue }
            let color = palette[i % palette.count]
            let d = pts.map { "\(num(px($0.x))),\(num(py($0.y)))" }.joined(separator: " ")
            s +=
                "<polyline class=\"series\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5 3\"" : "") points=\"\(d)\"/>"
            for p in pts { s += "<circle cx=\"\(num(px(p.x)))\" cy=\"\(num(py(p.y)))\" r=\"2.5\" fill=\"\(color)\"/>" }
        }
        // Legend below the x-axis label, two columns, one entry per series (dashed series drawn dashed).
        for (i, se) in shown {
            let x = l + Double(i % 2) * (w / 2)
            let y = Double(height) + 4 + Double(i / 2) * 15
            let color = palette[i % palette.count]
            s +=
                "<line x1=\"\(num(x))\" x2=\"\(num(x + 16))\" y1=\"\(num(y - 4))\" y2=\"\(num(y - 4))\" stroke=\"\(color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5 3\"" : "")/>"
            s += "<text x=\"\(num(x + 22))\" y=\"\(num(y))\" class=\"legend\">\(escape(String(se.name.prefix(40))))</text>"
        }
        return s + "</svg>"
    }

    /// Horizontal bars: one row per label, one bar per group (e.g. weight and output SQNR).
    static func barChart(title: String, labels: [String], groups: [(name: String, values: [Double])], unit: String, id: String) -> String {
        let rowH = 12.0 * Double(max(groups.count, 1)) + 8
        let (l, r, t) = (200.0, 60.0, 40.0)
        let width = 640.0
        let height = t + rowH * Double(labels.count) + 12
        let finite = groups.flatMap(\.values).filter(\.isFinite)
        let top = max(finite.max() ?? 1, 1e-9)
        var s =
            "<svg class=\"chart\" id=\"\(id)\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escape(title))\">"
        s += "<text x=\"8\" y=\"18\" class=\"title\">\(escape(title))</text>"
        for (g, group) in groups.enumerated() {
            s += "<rect x=\"\(num(l + Double(g) * 140))\" y=\"24\" width=\"10\" height=\"10\" fill=\"\(palette[g % palette.count])\"/>"
            s += "<text x=\"\(num(l + 14 + Double(g) * 140))\" y=\"33\" class=\"legend\">\(escape(group.name))</text>"
        }
        for (i, label) in labels.enumerated() {
            let y = t + Double(i) * rowH
            s +=
                "<text x=\"\(num(l - 6))\" y=\"\(num(y + rowH / 2 + 3))\" class=\"tick\" text-anchor=\"end\">\(escape(String(label.prefix(32))))</text>"
            for (g, group) in groups.enumerated() where i < group.values.count {
                let v = group.values[i]
                let len = v.isFinite ? max(0, v) / top * (width - l - r) : (width - l - r)
                s +=
                    "<rect class=\"bar\" x=\"\(num(l))\" y=\"\(num(y + 4 + Double(g) * 12))\" width=\"\(num(len))\" height=\"10\" fill=\"\(palette[g % palette.count])\"/>"
                s +=
                    "<text x=\"\(num(l + len + 4))\" y=\"\(num(y + 13 + Double(g) * 12))\" class=\"tick\">\(v.isFinite ? Text.fixed(v, 1) : "exact") \(unit)</text>"
            }
        }
        return s + "</svg>"
    }

    static func log10Safe(_ v: Double) -> Double { log10(v) }
    static func pow10(_ v: Double) -> Double { pow(10, v) }
}
