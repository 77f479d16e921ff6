import ArgumentParser
import KDBundle
import KDData
import KDIO
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write one self-contained HTML report of a run or a folder of runs (inline SVG, no network).",
        discussion: """
            From the bundles' provenance and their metrics logs (OUTPUT.metrics.jsonl): a table of runs, sweep summaries \
            (*.summary.json from --seeds), learning curves (loss and accuracy per epoch; both stages of two-stage methods, \
            marked), the provenance chain (parents found through the recorded command lines), and the quantize-check \
            per-layer SQNR chart when a *.quantize-check.json is next to the run. With --data, the best run (highest eval \
            accuracy) and its teachers are evaluated: per-class accuracy, confusion matrix, teacher-vs-student table.

            Examples:
              kdtool report distilled.kdb --data data/mnist -o report.html
              kdtool report runs/ --data data/mnist -o sweep.html
            """)

    @Argument(help: "A run bundle or a folder of runs.")
    var source: String

    @Option(help: "Data to evaluate the best run and its teachers on (optional).")
    var data: String?

    @Option(help: "Split for --data.")
    var split: Split = .eval

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Option(name: .shortAndLong, help: "Output HTML file.")
    var output: String

    struct Run {
        var path: String
        var name: String
        var provenance: Provenance?
        var epochs: [[String: Any]]
        var parameters: Int
        var digest: String
        var size: Int
        var evalAccuracy: Double? {
            if case .float(let a)? = provenance?.metrics["eval_accuracy"] { return a }
            return nil
        }
    }

    func run() throws {
        Parallel.configure(threads: threads)
        let (runs, folder) = try collect()
        guard !runs.isEmpty else {
            warn("kdtool: error: \(source) holds no run bundles (.kdb written by train or distill)")
            throw ExitCode.failure
        }
        var html = Self.head(title: "kdtool report — \(source)")
        html +=
            "<h1>kdtool report</h1><p class=\"meta\">\(SVG.escape(source)) · \(runs.count) run\(runs.count == 1 ? "" : "s") · kdtool \(kdtoolVersion)</p>"
        if let folder { html += sweepSection(folder) }
        html += curves(runs)
        // The best student: among distilled runs when there are any (a folder also holds its teacher and baselines).
        let distilled = runs.filter { $0.provenance.map { !["train", "init", "import"].contains($0.method) } ?? false }
        let best = (distilled.isEmpty ? runs : distilled).max { ($0.evalAccuracy ?? -1) < ($1.evalAccuracy ?? -1) }!
        if let data { html += try evaluation(best, data: data) }
        html += runTable(runs)
        html += provenanceChain(best)
        html += quantSection(runs, folder: folder)
        html += "</main></body></html>\n"
        try writeText(html, to: output)
        print("\(output): \(runs.count) runs, \(Text.bytes(html.utf8.count))")
    }

    // MARK: inputs

    func collect() throws -> ([Run], String?) {
        var st = stat()
        guard stat(source, &st) == 0 else {
            warn("kdtool: error: \(source): \(String(cString: strerror(errno)))")
            throw ExitCode.failure
        }
        var paths: [String] = []
        var folder: String?
        if (st.st_mode & S_IFMT) == S_IFDIR {
            folder = source.hasSuffix("/") ? String(source.dropLast()) : source
            paths = listFiles(folder!).filter { name in
                name.hasSuffix(".kdb")
                    && ![".ckpt.kdb", ".best.kdb", ".stage1.kdb", ".rerun.kdb", ".init.kdb"].contains { name.hasSuffix($0) }
            }.map { folder! + "/" + $0 }
        } else {
            paths = [source]
        }
        var runs: [Run] = []
        for p in paths.sorted() {
            guard let b = try? ModelBundle(path: p) else {
                warn("kdtool: warning: \(p) is not a readable bundle; skipped")
                continue
            }
            let prov = try? b.provenance()
            if folder != nil, let m = prov?.method, ["init", "import", "quantize"].contains(m) { continue }
            let params = b.tensors.filter { !$0.name.contains("running_") }.reduce(0) { $0 + $1.elementCount }
            runs.append(
                Run(
                    path: p, name: String(p.split(separator: "/").last ?? ""), provenance: prov, epochs: readMetrics(Companion.metrics(p)),
                    parameters: params, digest: (try? b.contentDigest()) ?? "", size: b.fileSize))
        }
        return (runs, folder)
    }

    func listFiles(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = PathCoding.entryName(e)
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }

    func readMetrics(_ path: String) -> [[String: Any]] {
        guard let bytes = try? RunConfig.readAll(path) else { return [] }
        return bytes.split(separator: 10).compactMap { try? MiniJSON.parse(Array($0)) as? [String: Any] }
    }

    // MARK: sections

    func runTable(_ runs: [Run]) -> String {
        var h =
            "<section><h2>Runs</h2><table id=\"runs\"><tr><th>run</th><th>method</th><th>settings</th><th>seed</th><th>train acc</th><th>eval acc</th><th>seconds</th><th>parameters</th><th>size</th><th>content digest</th></tr>"
        for r in runs {
            let hp = r.provenance?.hyperparameters ?? [:]
            let keys = ["temperature", "alpha", "epochs", "lr", "batch_size", "stage1_epochs", "peers", "head"].filter { hp[$0] != nil }
            let settings = keys.map { "\($0)=\(Self.show(hp[$0]!))" }.joined(separator: " ")
            func metric(_ k: String) -> String {
                if case .float(let v)? = r.provenance?.metrics[k] {
                    return k.hasSuffix("accuracy") ? Text.fixed(100 * v, 2) + " %" : Text.fixed(v, 1)
                }
                return "—"
            }
            h +=
                "<tr><td>\(SVG.escape(r.name))</td><td>\(SVG.escape(r.provenance?.method ?? "?"))</td><td>\(SVG.escape(settings))</td><td>\(r.provenance?.seed.map(String.init) ?? "—")</td><td>\(metric("train_accuracy"))</td><td>\(metric("eval_accuracy"))</td><td>\(metric("seconds"))</td><td>\(Text.grouped(r.parameters))</td><td>\(Text.bytes(r.size))</td><td><code>\(r.digest.prefix(16))…</code></td></tr>"
        }
        return h + "</table></section>"
    }

    static func show(_ v: Value) -> String {
        switch v {
        case .float(let d): return d == d.rounded() && abs(d) < 1e9 ? String(Int(d)) : "\(d)"
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        default: return "…"
        }
    }

    func sweepSection(_ folder: String) -> String {
        let files = listFiles(folder).filter { $0.hasSuffix(".summary.json") }
        guard !files.isEmpty else { return "" }
        var h =
            "<section><h2>Seed summaries</h2><table id=\"summaries\"><tr><th>summary</th><th>seeds</th><th>eval accuracy (mean ± std)</th><th>paired difference vs baseline [95 % CI]</th></tr>"
        var bars: [(String, Double)] = []
        for f in files {
            guard let doc = (try? RunConfig.readAll(folder + "/" + f)).flatMap({ try? MiniJSON.parse($0) as? [String: Any] }) else {
                continue
            }
            let seeds = (doc["seeds"] as? [Any])?.count ?? 0
            let mean = doc["mean_eval_accuracy"] as? Double
            let std = doc["std_eval_accuracy"] as? Double ?? 0
            var paired = "—"
            if let d = doc["paired_difference"] as? Double, let lo = doc["paired_ci95_low"] as? Double,
                let hi = doc["paired_ci95_high"] as? Double
            {
                paired = "\(Text.fixed(100 * d, 2)) [\(Text.fixed(100 * lo, 2)), \(Text.fixed(100 * hi, 2))] points"
            }
            h +=
                "<tr><td>\(SVG.escape(f))</td><td>\(seeds)</td><td>\(mean.map { "\(Text.fixed(100 * $0, 2)) ± \(Text.fixed(100 * std, 2)) %" } ?? "—")</td><td>\(paired)</td></tr>"
            if let mean { bars.append((String(f.dropLast(13)), 100 * mean)) }
        }
        h += "</table>"
        if bars.count > 1 {
            h += SVG.barChart(
                title: "Mean eval accuracy per sweep point", labels: bars.map(\.0), groups: [("eval accuracy", bars.map(\.1))], unit: "%",
                id: "sweep-chart")
        }
        return h + "</section>"
    }

    /// "kd-T4-s3.kdb" → "kd-T4": runs that differ only in their seed share a curve (mean per epoch) when there are many.
    static func group(_ name: String) -> String {
        var n = name.hasSuffix(".kdb") ? String(name.dropLast(4)) : name
        if let r = n.lastIndex(of: "-"), n[n.index(after: r)...].first == "s", n[n.index(r, offsetBy: 2)...].allSatisfy(\.isNumber),
            n.index(r, offsetBy: 2) < n.endIndex
        {
            n = String(n[..<r])
        }
        return n
    }

    /// The training objective a method's metrics log records as `train_loss`, for the loss axis.
    static func objective(_ method: String?) -> String {
        switch method ?? "train" {
        case "train", "import", "init": return "cross-entropy"
        case "kd": return "KD loss (α·T²·KL + (1−α)·CE)"
        case "fitnets", "fitnets-hint": return "FitNets loss (hint, then KD)"
        case "fsp": return "FSP loss (FSP matrices, then CE)"
        case "dml", "dml-e": return "DML loss (CE + KL to peers)"
        case "kc": return "KC loss (sigmoid CE + self-paced KD)"
        case "specialist": return "specialist loss (CE over its classes + dustbin)"
        case let m: return "\(m) loss"
        }
    }

    func curves(_ runs: [Run]) -> String {
        let grouped = runs.count > 8
        var order: [String] = []
        var members: [String: [Run]] = [:]
        for r in runs where !r.epochs.isEmpty {
            let key = grouped ? Self.group(r.name) : r.name
            if members[key] == nil { order.append(key) }
            members[key, default: []].append(r)
        }
        guard !order.isEmpty else {
            return
                "<section><h2>Learning curves</h2><p class=\"empty\">No metrics logs (OUTPUT.metrics.jsonl) next to the bundles.</p></section>"
        }
        // Losses are drawn per objective: cross-entropy and each method's distillation objective (KD's
        // T²-scaled soft term, hint losses, …) have different scales and must not share an axis.
        var loss: [(objective: String, series: SVG.Series)] = []
        var acc: [SVG.Series] = []
        var markers: [(Double, String)] = []
        func mean(_ rs: [Run], _ key: String, scale: Double) -> [(x: Double, y: Double)] {
            let n = rs.map(\.epochs.count).min() ?? 0
            return (0..<n).compactMap { i in
                let v = rs.compactMap { $0.epochs[i][key] as? Double }
                return v.count == rs.count ? (Double(i + 1), scale * v.reduce(0, +) / Double(v.count)) : nil
            }
        }
        for key in order {
            let rs = members[key]!
            let label = grouped && rs.count > 1 ? "\(key) (mean of \(rs.count))" : key
            if order.count == 1 {
                var lastStage: String?
                for (i, e) in rs[0].epochs.enumerated() {
                    let stage = e["stage"] as? String
                    if let s = stage, s != lastStage { markers.append((Double(i) + 0.5, s)) }
                    lastStage = stage
                }
                acc.append(.init(name: "train", points: mean(rs, "train_accuracy", scale: 100), dashed: true))
                acc.append(.init(name: "eval", points: mean(rs, "eval_accuracy", scale: 100)))
            } else {
                let e = mean(rs, "eval_accuracy", scale: 100)
                acc.append(.init(name: label, points: e.isEmpty ? mean(rs, "train_accuracy", scale: 100) : e))
            }
            loss.append((Self.objective(rs[0].provenance?.method), .init(name: label, points: mean(rs, "train_loss", scale: 1))))
        }
        var objectives: [String] = []
        for l in loss where !objectives.contains(l.objective) { objectives.append(l.objective) }
        let lossCharts = objectives.enumerated().map { i, objective -> String in
            let series = loss.filter { $0.objective == objective }.map(\.series)
            let spread = series.flatMap(\.points).map(\.y).filter { $0 > 0 }
            let logY = (spread.max() ?? 1) / max(spread.min() ?? 1, 1e-12) > 100
            return SVG.lineChart(
                title: "Training loss per epoch: \(objective)", xLabel: "epoch (all stages)",
                yLabel: logY ? "\(objective) (log scale)" : objective, series: series, markers: markers, logY: logY,
                id: i == 0 ? "loss-chart" : "loss-chart-\(i + 1)")
        }
        return "<section><h2>Learning curves</h2><div class=\"row\">"
            + lossCharts.joined()
            + SVG.lineChart(
                title: order.count == 1 ? "Accuracy per epoch" : "Eval accuracy per epoch", xLabel: "epoch (all stages)",
                yLabel: "accuracy %",
                series: acc, markers: markers, id: "accuracy-chart")
            + "</div></section>"
    }

    func evaluation(_ best: Run, data: String) throws -> String {
        let (model, bundle) = try loadModel(best.path)
        let prep =
            model.preprocessing ?? Preprocessing(channels: model.inputShape[1], height: model.inputShape[2], width: model.inputShape[3])
        var o = DataSource.Options(split: split, holdout: 0.2, seed: 0, imageShape: prep.shape)
        o.invert = prep.invert
        let set = try reportingErrors { try DataSource.load(data, o) }
        try reportingErrors { try checkCompatible(model, set) }
        func evaluate(_ m: Model) throws -> Evaluation {
            try reportingErrors {
                try m.evaluate(Batcher(set, batchSize: 256, shuffle: false, normalization: prep.normalization, seed: 0), fused: true)
            }
        }
        let e = try evaluate(model)
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        var h =
            "<section><h2>\(best.provenance.map { ["train", "init", "import"].contains($0.method) } ?? true ? "Best run" : "Best distilled run") on \(SVG.escape(data)) [\(split.rawValue)]: \(SVG.escape(best.name))</h2>"
        h +=
            "<p>accuracy <b>\(Text.fixed(100 * e.accuracy, 2)) %</b> (\(e.count - e.correct) errors of \(e.count)), loss \(Text.fixed(e.loss, 4))</p>"
        let per = e.perClassAccuracy.map { 100 * ($0 ?? 0) }
        h += SVG.barChart(title: "Per-class accuracy", labels: names, groups: [("accuracy", per)], unit: "%", id: "per-class-chart")
        h += "<h3>Confusion matrix (rows: true class, columns: predicted)</h3><table class=\"confusion\" id=\"confusion\"><tr><th></th>"
        h += names.map { "<th>\(SVG.escape($0))</th>" }.joined() + "</tr>"
        for (i, row) in e.confusion.enumerated() {
            let total = max(row.reduce(0, +), 1)
            h += "<tr><th>\(SVG.escape(i < names.count ? names[i] : String(i)))</th>"
            for (j, v) in row.enumerated() {
                let a = Double(v) / Double(total)
                let color = i == j ? "rgba(44,160,44,\(Text.fixed(0.15 + 0.85 * a, 2)))" : "rgba(214,39,40,\(Text.fixed(min(1, 4 * a), 2)))"
                h += "<td style=\"background:\(color)\">\(v)</td>"
            }
            h += "</tr>"
        }
        h += "</table>"
        // Teachers: the positional bundles before the student in the recorded command, when their digests match PROV.
        let parents = Dictionary((best.provenance?.parents ?? []).map { ($0.digest, $0.role) }, uniquingKeysWith: { a, _ in a })
        var rows: [(String, String, Model, ModelBundle, Evaluation)] = [(best.name, "student (this run)", model, bundle, e)]
        for path in recordedInputs(best) {
            guard let (m, b) = try? loadModel(path), let d = try? b.contentDigest(), let role = parents[d], role == "teacher" else {
                continue
            }
            if Array(m.inputShape.dropFirst()) == Array(model.inputShape.dropFirst()), m.classCount == model.classCount {
                rows.append((path, role, m, b, try evaluate(m)))
            }
        }
        if rows.count > 1 {
            h +=
                "<h3>Teacher vs student</h3><table id=\"teacher-student\"><tr><th>model</th><th>role</th><th>accuracy</th><th>parameters</th><th>MFLOPs / image</th><th>size</th></tr>"
            for (name, role, m, b, ev) in rows {
                let flops = m.flopsPerImage
                h +=
                    "<tr><td>\(SVG.escape(name))</td><td>\(role)</td><td>\(Text.fixed(100 * ev.accuracy, 2)) %</td><td>\(Text.grouped(m.parameterCount))</td><td>\(Text.fixed(Double(flops) / 1e6, 2))</td><td>\(Text.bytes(b.fileSize))</td></tr>"
            }
            h += "</table>"
        }
        return h + "</section>"
    }

    /// Bundle paths among the recorded command's positional arguments, made absolute against its directory.
    func recordedInputs(_ r: Run) -> [String] {
        guard case .array(let argv)? = r.provenance?.hyperparameters["argv"] else { return [] }
        var cwd = ""
        if case .string(let c)? = r.provenance?.hyperparameters["cwd"] { cwd = c }
        var out: [String] = []
        var i = 1
        let args = argv.compactMap { if case .string(let s) = $0 { s } else { nil } }
        while i < args.count {
            if args[i].hasPrefix("-") {
                i += 2
                continue
            }
            if args[i].hasSuffix(".kdb") { out.append(args[i].hasPrefix("/") || cwd.isEmpty ? args[i] : cwd + "/" + args[i]) }
            i += 1
        }
        return out
    }

    func provenanceChain(_ best: Run) -> String {
        var h = "<section><h2>Provenance chain</h2><ol class=\"chain\" id=\"provenance\">"
        var current: Run? = best
        var seen = Set<String>()
        var depth = 0
        while let r = current, depth < 8, seen.insert(r.digest).inserted {
            depth += 1
            let p = r.provenance
            h += "<li><b>\(SVG.escape(r.name))</b> — \(SVG.escape(p?.method ?? "?")) · digest <code>\(r.digest.prefix(16))…</code>"
            if let p {
                let hp = p.hyperparameters.keys.sorted().filter { $0 != "argv" && $0 != "cwd" }.map {
                    "\($0)=\(Self.show(p.hyperparameters[$0]!))"
                }
                h += "<br><span class=\"small\">\(SVG.escape(hp.joined(separator: ", ")))</span>"
                if case .string(let src)? = p.data["source"] { h += "<br><span class=\"small\">data \(SVG.escape(src))</span>" }
                h +=
                    "<br><span class=\"small\">parents: "
                    + p.parents.map { "\($0.role) <code>\($0.digest.prefix(12))…</code>" }.joined(separator: ", ") + "</span>"
            }
            h += "</li>"
            // Follow the student/init parent through the recorded inputs.
            let parents = Dictionary((p?.parents ?? []).map { ($0.digest, $0.role) }, uniquingKeysWith: { a, _ in a })
            current = nil
            for path in recordedInputs(r) {
                guard let b = try? ModelBundle(path: path), let d = try? b.contentDigest(), let role = parents[d],
                    role != "teacher" && role != "peer"
                else { continue }
                current = Run(
                    path: path, name: path, provenance: try? b.provenance(), epochs: [], parameters: 0, digest: d, size: b.fileSize)
            }
        }
        return h + "</ol></section>"
    }

    func quantSection(_ runs: [Run], folder: String?) -> String {
        var files: [String] = []
        if let folder { files = listFiles(folder).filter { $0.hasSuffix(".quantize-check.json") }.map { folder + "/" + $0 } }
        for r in runs where files.isEmpty {
            let candidate = Companion.stem(r.path) + ".quantize-check.json"
            if access(candidate, R_OK) == 0 { files.append(candidate) }
        }
        var h = ""
        for (i, f) in files.enumerated() {
            guard let doc = (try? RunConfig.readAll(f)).flatMap({ try? MiniJSON.parse($0) as? [String: Any] }),
                let layers = doc["layers"] as? [[String: Any]]
            else { continue }
            h += "<section><h2>Quantize-check: \(SVG.escape(f.split(separator: "/").last.map(String.init) ?? f))</h2>"
            if let a = doc["accuracy_fp32"] as? Double, let q = doc["accuracy_quantized"] as? Double {
                h +=
                    "<p>\(SVG.escape(doc["scheme"] as? String ?? "")): accuracy \(Text.fixed(100 * a, 2)) % → \(Text.fixed(100 * q, 2)) %, file size ×\(Text.fixed(doc["file_size_ratio"] as? Double ?? 0, 3))</p>"
            }
            h += SVG.barChart(
                title: "SQNR per layer (worst output first)", labels: layers.map { $0["node"] as? String ?? "?" },
                groups: [
                    ("weight SQNR", layers.map { $0["weight_sqnr_db"] as? Double ?? .infinity }),
                    ("output SQNR", layers.map { $0["activation_sqnr_db"] as? Double ?? .infinity }),
                ], unit: "dB", id: "sqnr-chart-\(i)")
            h += "</section>"
        }
        return h
    }

    static func head(title: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(SVG.escape(title))</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
        body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
        main{max-width:1200px;margin:0 auto;padding:16px 24px}
        h1{margin:8px 0 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
        .meta,.small{color:#666}.small{font-size:12px}
        table{border-collapse:collapse;margin:8px 0;background:#fff}
        th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}th{background:#f0f0f0}
        td:first-child,th:first-child{text-align:left}
        .confusion td{text-align:center;min-width:32px}
        .row{display:flex;flex-wrap:wrap;gap:16px}
        .chart{background:#fff;border:1px solid #ddd}
        .chart .title{font-weight:600;font-size:13px}.chart .tick{font-size:10px;fill:#555}
        .chart .axis{font-size:11px;fill:#333}.chart .legend{font-size:11px}
        .chart .frame{fill:none;stroke:#bbb}.chart .grid{stroke:#eee}.chart .marker{stroke:#999;stroke-dasharray:3 3}
        code{font-size:12px}.chain li{margin-bottom:8px}.empty{color:#999}
        </style></head><body><main>
        """
    }
}
