import ArgumentParser
import KDBundle
import KDIO

#if canImport(Glibc)
    import Glibc
#endif

/// The arguments of the run being executed (after `--config` expansion), recorded in PROV so
/// `kdtool rerun` can replay it, and the config file they came from.
enum Invocation {
    nonisolated(unsafe) static var arguments: [String] = []
    nonisolated(unsafe) static var configFile: String?
}

/// `--config FILE.yaml` for `train` and `distill`: every key is a flag (`eval_split: eval` →
/// `--eval-split eval`; `true` → a bare flag; lists → comma-separated), `model` (train) or
/// `bundles` (distill) give the positional bundles, `sweep: {key: [values]}` runs every
/// combination in sequence (the output needs `{key}` placeholders, else `-key<value>` is added).
/// Flags on the command line override the file. Unknown keys are an error naming all of them.
enum RunConfig {
    static let positional = ["train": "model", "distill": "bundles", "distil": "bundles"]

    /// A config that cannot be used: unreadable or invalid (exit 2) or naming unknown flags (64).
    struct Failure: Error, CustomStringConvertible {
        let description: String
        var code = Exit.invalidInput
    }

    /// Argument lists to run: the command line itself without `--config`, or one per sweep point.
    static func expand(_ argv: [String]) throws -> [[String]] {
        guard let sub = argv.first, let positionalKey = positional[sub],
            let at = argv.firstIndex(where: { $0 == "--config" || $0.hasPrefix("--config=") })
        else { return [argv] }
        let path: String
        var rest = argv
        if argv[at].hasPrefix("--config=") {
            path = String(argv[at].dropFirst(9))
            rest.remove(at: at)
        } else {
            guard at + 1 < argv.count else { throw Failure(description: "--config needs a file") }
            path = argv[at + 1]
            rest.removeSubrange(at...(at + 1))
        }
        let map: [String: Any]
        let sweep: [(String, [String])]
        do {
            (map, sweep) = try ConfigFile.load(path)
        } catch let e as ConfigFile.Failure {
            throw Failure(description: e.description)
        }
        var points: [[(String, String)]] = [[]]
        for (k, values) in sweep { points = points.flatMap { p in values.map { p + [(k, $0)] } } }
        var runs: [[String]] = []
        for point in points {
            var m = map
            m.removeValue(forKey: "sweep")
            for (k, v) in point { m[k] = v }
            if !point.isEmpty, let out = m["output"].map(scalar) {
                var o = out
                for (k, v) in point {
                    if o.contains("{\(k)}") {
                        o = o.replacing("{\(k)}", with: v)
                    } else {
                        let dot = o.hasSuffix(".kdb") ? o.count - 4 : o.count
                        o = String(o.prefix(dot)) + "-\(k)\(v)" + String(o.dropFirst(dot))
                    }
                }
                m["output"] = o
            }
            var args = [sub]
            if let p = m.removeValue(forKey: positionalKey) {
                args += (p as? [Any])?.map(scalar) ?? [scalar(p)]
            }
            for k in m.keys.sorted() {
                let flag = "--" + k.replacing("_", with: "-")
                switch m[k] {
                case let b as Bool: if b { args.append(flag) }
                case let list as [Any]: args += [flag, list.map(scalar).joined(separator: ",")]
                case let v?: args += [flag, scalar(v)]
                default: break
                }
            }
            try checkKeys(args + rest, file: path)
            // Every argument is recorded in the output's provenance: one that could not be written
            // there is refused now, not after the training it would have ended.
            if let long = (args + rest).first(where: { $0.utf8.count > Value.maxStringBytes }) {
                throw Failure(
                    description:
                        "\(path): the value '\(long.prefix(40))…' is \(long.utf8.count) bytes; settings are recorded in the bundle, which holds at most \(Value.maxStringBytes) bytes a string"
                )
            }
            runs.append(args + rest.dropFirst())
        }
        Invocation.configFile = path
        return runs
    }

    static func scalar(_ v: Any) -> String { ConfigFile.scalar(v) }

    /// The `-o`/`--output` of a command line, if any.
    static func output(_ args: [String]) -> String? {
        var output: String?
        for (i, a) in args.enumerated() {
            if a == "-o" || a == "--output", i + 1 < args.count { output = args[i + 1] }
            if a.hasPrefix("--output=") { output = String(a.dropFirst(9)) }
        }
        return output
    }

    /// One table across a sweep's runs: the flags that differ between them, then validation and
    /// eval accuracy and seconds from each output's provenance; also written as CSV beside the
    /// config file (`CONFIG.summary.csv`).
    static func summary(_ runs: [[String]]) -> (table: String, csv: String) {
        // The values of each flag per run ("" where a run lacks it); flags whose values differ are the sweep's axes.
        func flags(_ args: [String]) -> [String: String] {
            var out: [String: String] = [:]
            var i = 0
            while i < args.count {
                let a = args[i]
                if a.hasPrefix("--"), a != "--resume", a != "--quiet", a != "--output" {
                    if let eq = a.firstIndex(of: "=") {
                        out[String(a[..<eq])] = String(a[a.index(after: eq)...])
                    } else if i + 1 < args.count, !args[i + 1].hasPrefix("-") {
                        out[a] = args[i + 1]
                        i += 1
                    } else {
                        out[a] = "yes"
                    }
                }
                i += 1
            }
            return out
        }
        let parsed = runs.map(flags)
        let keys = Set(parsed.flatMap(\.keys)).sorted().filter { k in Set(parsed.map { $0[k] ?? "" }).count > 1 }
        var rows: [[String]] = []
        for (i, args) in runs.enumerated() {
            let out = output(args) ?? ""
            let prov = (try? ModelBundle(path: out)).flatMap { try? $0.provenance() }
            func metric(_ k: String) -> String {
                guard case .float(let v)? = prov?.metrics[k] else { return "" }
                return k == "seconds" ? Text.fixed(v, 1) : Text.fixed(100 * v, 2)
            }
            let evalAccuracy = prov == nil ? (SeedSweep.accuracy(out).map { Text.fixed(100 * $0, 2) } ?? "") : metric("eval_accuracy")
            rows.append(
                ["\(i + 1)"] + keys.map { parsed[i][$0] ?? "" }
                    + [
                        prov == nil && evalAccuracy.isEmpty ? "missing" : "ok", metric("train_accuracy"), metric("val_accuracy"),
                        evalAccuracy, metric("seconds"), out,
                    ])
        }
        var header =
            ["run"] + keys.map { String($0.dropFirst(2)) } + ["status", "train acc %", "val acc %", "eval acc %", "seconds", "output"]
        // Metric columns no run has (no validation split, no eval split) are left out.
        for c in (header.count - 5..<header.count - 1).reversed() where rows.allSatisfy({ $0[c].isEmpty }) {
            header.remove(at: c)
            for r in rows.indices { rows[r].remove(at: c) }
        }
        let right = Set([0] + (keys.count + 2..<header.count - 1))
        let csv =
            ([header] + rows).map { $0.map { String(decoding: CSVField.encode($0), as: UTF8.self) }.joined(separator: ",") }.joined(
                separator: "\n") + "\n"
        return (Text.table(header, rows, right: right), csv)
    }

    /// With `--resume`, a sweep's run whose output already holds a verified bundle recording the
    /// same command (but for `--resume`) is finished: its output path, so the sweep skips it.
    static func finishedOutput(_ args: [String]) -> String? {
        guard args.contains("--resume") else { return nil }
        guard let output = output(args), let bundle = try? ModelBundle(path: output), (try? bundle.verify()) != nil,
            let prov = try? bundle.provenance(), case .array(let recorded)? = prov.hyperparameters["argv"]
        else { return nil }
        let done = recorded.compactMap { v -> String? in if case .string(let s) = v { s } else { nil } }
        return done.filter { $0 != "--resume" } == args.filter { $0 != "--resume" } ? output : nil
    }

    /// Every `--flag` the command does not know, reported at once as config keys.
    static func checkKeys(_ args: [String], file: String) throws {
        var probe = args
        var unknown: [String] = []
        for _ in 0..<32 {
            do {
                _ = try KDTool.parseAsRoot(probe)
                break
            } catch {
                let message = KDTool.message(for: error)
                guard let r = message.firstRange(of: "Unknown option '--") else { break }
                let name = String(message[r.upperBound...].prefix { $0 != "'" })
                unknown.append(name.replacing("-", with: "_"))
                if let i = probe.firstIndex(of: "--" + name) {
                    probe.remove(at: i)
                    if i < probe.count, !probe[i].hasPrefix("-") { probe.remove(at: i) }
                } else {
                    break
                }
            }
        }
        if !unknown.isEmpty {
            let known = knownKeys(args.first ?? "")
            let named = unknown.map { key in
                nearest(key, in: known).map { "'\(key)' (did you mean '\($0)'?)" } ?? "'\(key)'"
            }
            throw Failure(
                description: "\(file): unknown key\(unknown.count > 1 ? "s" : "") \(named.joined(separator: ", "))", code: Exit.usage)
        }
    }

    /// The config keys a command takes: its long options, spelled with underscores.
    static func knownKeys(_ command: String) -> [String] {
        guard
            let type = KDTool.configuration.subcommands.first(where: {
                $0._commandName == command || $0.configuration.aliases.contains(command)
            })
        else { return [] }
        let help = KDTool.helpMessage(for: type)
        return Set(help.matches(of: /--([a-z0-9][a-z0-9-]*)/).map { String($0.output.1).replacing("-", with: "_") }).sorted()
    }

    /// The known key closest to `key` by edit distance, when it is close (at most a third of its length).
    static func nearest(_ key: String, in known: [String]) -> String? {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            var row = Array(0...b.count)
            for (i, x) in a.enumerated() {
                var previous = row[0]
                row[0] = i + 1
                for (j, y) in b.enumerated() {
                    let substitution = previous + (x == y ? 0 : 1)
                    previous = row[j + 1]
                    row[j + 1] = min(substitution, row[j] + 1, row[j + 1] + 1)
                }
            }
            return row[b.count]
        }
        let k = Array(key)
        let best = known.map { ($0, distance(k, Array($0))) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(1, key.count / 3) else { return nil }
        return best.0
    }

    /// A small text file (configs, metrics logs): a regular file of at most `Caps.current.configBytes` × 16.
    static func readAll(_ path: String) throws -> [UInt8] { try SafeFile.readAll(path, limit: Caps.current.configBytes * 16) }

    /// The resolved settings of one run (every flag given, from the file or the command line) as YAML.
    static func resolved(_ args: [String]) -> String {
        var lines: [String] = []
        var positionals: [String] = []
        var i = 1
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") || (a.hasPrefix("-") && a.count == 2 && Double(a) == nil) {
                let raw = a.drop { $0 == "-" }.replacing("-", with: "_")
                let key = ["o": "output", "T": "temperature"][raw] ?? raw
                if i + 1 < args.count, !args[i + 1].hasPrefix("--"), !(args[i + 1].hasPrefix("-") && Double(args[i + 1]) == nil) {
                    lines.append("\(key): \(quote(args[i + 1]))")
                    i += 2
                } else {
                    lines.append("\(key): true")
                    i += 1
                }
            } else {
                positionals.append(a)
                i += 1
            }
        }
        let key = positional[args.first ?? ""] ?? "arguments"
        let head = positionals.isEmpty ? [] : ["\(key): [\(positionals.map(quote).joined(separator: ", "))]"]
        return (["# resolved by kdtool \(kdtoolVersion): \(args.first ?? "")"] + head + lines).joined(separator: "\n") + "\n"
    }

    static func quote(_ s: String) -> String {
        if Double(s) != nil { return s }
        let plain =
            !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || "._/-,+".contains($0) }
            && !["true", "false", "null", "yes", "no", "on", "off"].contains(s.lowercased())
        return plain ? s : "\"" + s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
    }
}

/// Writes a text file (a report, a config, a summary) atomically; a failure is exit 5 with the old file kept.
func writeText(_ text: String, to path: String) throws { try reportingErrors { try AtomicOutput.write(text, to: path) } }

/// `--seeds a,b,c` on train and distill: the same command once per seed, then mean ± std of the
/// eval accuracy and, with `--baseline`, the paired difference against runs with the same seeds.
enum SeedSweep {
    static let t95: [Int: Double] = [1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262]

    static func pattern(_ p: String, seed: Int) -> String {
        if p.contains("{seed}") { return p.replacing("{seed}", with: String(seed)) }
        let cut = p.hasSuffix(".kdb") ? p.count - 4 : (p.hasSuffix("/") ? p.count - 1 : p.count)
        return String(p.prefix(cut)) + "-s\(seed)" + String(p.dropFirst(cut))
    }

    /// Eval accuracy recorded in a bundle (or the mean over the peer bundles of a DML folder).
    static func accuracy(_ path: String) -> Double? {
        func one(_ p: String) -> Double? {
            guard let b = try? ModelBundle(path: p), let prov = try? b.provenance(), case .float(let a)? = prov.metrics["eval_accuracy"]
            else { return nil }
            return a
        }
        if let a = one(path) { return a }
        var values: [Double] = []
        for k in 1...64 {
            guard let a = one(path + (path.hasSuffix("/") ? "" : "/") + "peer\(k).kdb") else { break }
            values.append(a)
        }
        return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }

    static func run(seeds: String, baseline: String?, output: String) throws {
        let list = seeds.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: " ")) }
        guard !list.isEmpty, list.count == seeds.split(separator: ",").count else {
            throw ValidationError("--seeds takes comma-separated integers, e.g. 0,1,2,3,4")
        }
        var base: [String] = []
        var i = 0
        let args = Invocation.arguments
        let config = Invocation.configFile
        while i < args.count {
            if ["--seeds", "--baseline", "--seed", "-o", "--output"].contains(args[i]) {
                i += 2
                continue
            }
            base.append(args[i])
            i += 1
        }
        var rows: [(seed: Int, path: String, acc: Double?, baseline: Double?)] = []
        for s in list {
            let out = pattern(output, seed: s)
            let runArgs = base + ["--seed", String(s), "-o", out]
            Invocation.arguments = runArgs
            Invocation.configFile = config
            warn("== seed \(s) → \(out)")
            var command = try KDTool.parseAsRoot(runArgs)
            try command.run()
            rows.append((s, out, accuracy(out), baseline.map { pattern($0, seed: s) }.flatMap(accuracy)))
        }
        let accs = rows.compactMap(\.acc)
        func stats(_ xs: [Double]) -> (Double, Double) {
            let m = xs.reduce(0, +) / Double(max(xs.count, 1))
            let sd = xs.count > 1 ? (xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(xs.count - 1)).squareRoot() : 0
            return (m, sd)
        }
        var doc: [(String, JSON)] = [
            ("command", .array(base.map { .string($0) })), ("seeds", .array(list.map { .int($0) })),
            (
                "runs",
                .array(
                    rows.map { r in
                        .object([
                            ("seed", .int(r.seed)), ("output", .string(r.path)), ("eval_accuracy", r.acc.map { .number($0) } ?? .null),
                            ("baseline_eval_accuracy", r.baseline.map { .number($0) } ?? .null),
                        ])
                    })
            ),
        ]
        print("\nseeds \(list.map(String.init).joined(separator: ","))")
        if accs.count == rows.count, !accs.isEmpty {
            let (m, sd) = stats(accs)
            doc += [("mean_eval_accuracy", .number(m)), ("std_eval_accuracy", .number(sd))]
            print("  eval accuracy \(Text.fixed(100 * m, 2)) ± \(Text.fixed(100 * sd, 2)) % over \(accs.count) seeds")
            let paired = rows.compactMap { r in r.baseline.flatMap { b in r.acc.map { $0 - b } } }
            if baseline != nil, paired.count == rows.count {
                let (d, dsd) = stats(paired)
                let half = (t95[paired.count - 1] ?? 1.96) * dsd / Double(paired.count).squareRoot()
                doc += [
                    ("paired_difference", .number(d)), ("paired_ci95_low", .number(d - half)), ("paired_ci95_high", .number(d + half)),
                ]
                print(
                    "  paired difference vs baseline \(Text.fixed(100 * d, 2)) points [\(Text.fixed(100 * (d - half), 2)), \(Text.fixed(100 * (d + half), 2))] (95 % t interval)"
                )
            } else if baseline != nil {
                warn("kdtool: warning: some baseline bundles are missing or have no eval accuracy; no paired difference")
            }
        } else {
            warn("kdtool: warning: some runs have no eval accuracy (add --eval-split eval for the summary)")
        }
        // kd-T4-s{seed}.kdb → kd-T4.summary.json (the seed placeholder and its "-s" prefix dropped).
        var summaryBase = output
        for marker in ["-s{seed}", "_s{seed}", "-{seed}", "_{seed}", "{seed}"] where summaryBase.contains(marker) {
            summaryBase = summaryBase.replacing(marker, with: "")
            break
        }
        let stem = Companion.stem(summaryBase.hasSuffix("/") ? String(summaryBase.dropLast()) : summaryBase)
        let summary = stem + ".summary.json"
        try writeText(JSON.object(doc).render() + "\n", to: summary)
        print("  summary \(summary)")
    }
}

func currentDirectory() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    guard getcwd(&buf, buf.count) != nil else { return "." }
    return String(cString: buf)
}

/// `path` made absolute against the current directory.
func absolutePath(_ path: String) -> String { path.hasPrefix("/") ? path : currentDirectory() + "/" + path }
