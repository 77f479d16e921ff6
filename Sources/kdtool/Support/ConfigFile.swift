import KDIO
import Yams

/// Reading a `--config` YAML file without trusting it: a regular file of at most
/// `Caps.current.configBytes`, at most `Caps.current.configNodes` values once aliases are expanded
/// (a "billion laughs" file is refused before it is built), at most 64 levels deep, and a sweep
/// of at most `Caps.current.sweepRuns` runs. Depends on KDIO and Yams only (the fuzz target
/// `tools/fuzz/ConfigFuzz.swift` compiles it alone).
enum ConfigFile {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// The flags mapping and the sweep (flag, values) pairs of a config file.
    static func load(_ path: String) throws -> (map: [String: Any], sweep: [(String, [String])]) {
        let text: String
        do {
            text = String(decoding: try SafeFile.readAll(path, limit: Caps.current.configBytes), as: UTF8.self)
        } catch let e as InputError {
            throw Failure(description: "\(e)")
        }
        return try parse(text, path: path)
    }

    static func parse(_ text: String, path: String) throws -> (map: [String: Any], sweep: [(String, [String])]) {
        guard text.utf8.count <= Caps.current.configBytes else {
            throw Failure(description: "\(path): \(text.utf8.count) bytes is above the limit of \(Caps.current.configBytes) for a config")
        }
        let doc: Any?
        do {
            // Aliases share nodes in the composed tree but are copied when values are built: count
            // what building would make (each alias as often as it is used) before building it.
            if let node = try Yams.compose(yaml: text) {
                var budget = Caps.current.configNodes
                try countNodes(node, budget: &budget, depth: 0, path: path)
            }
            doc = try Yams.load(yaml: text)
        } catch let e as Failure {
            throw e
        } catch {
            throw Failure(description: "\(path): not valid YAML: \(error)")
        }
        guard let map = doc as? [String: Any] else { throw Failure(description: "\(path): the config must be a mapping of flags") }
        var sweep: [(String, [String])] = []
        if let s = map["sweep"] {
            guard let sm = s as? [String: Any] else { throw Failure(description: "\(path): sweep must map flags to lists of values") }
            for k in sm.keys.sorted() {
                guard let values = sm[k] as? [Any], !values.isEmpty else {
                    throw Failure(description: "\(path): sweep.\(k) must be a non-empty list")
                }
                sweep.append((k, values.map(scalar)))
            }
        }
        let runs = sweep.reduce(into: 1) { n, kv in n = n.multipliedReportingOverflow(by: kv.1.count).overflow ? Int.max : n * kv.1.count }
        guard runs <= Caps.current.sweepRuns else {
            throw Failure(
                description:
                    "\(path): the sweep has \(runs == Int.max ? "too many" : "\(runs)") runs, above the limit of \(Caps.current.sweepRuns)")
        }
        return (map, sweep)
    }

    /// Counts the values building `node` would make, aliases expanded, against `budget`.
    static func countNodes(_ node: Node, budget: inout Int, depth: Int, path: String) throws {
        budget -= 1
        guard budget >= 0 else {
            throw Failure(
                description:
                    "\(path): the config expands to more than \(Caps.current.configNodes) values (aliases counted each time they are used)")
        }
        guard depth < 64 else { throw Failure(description: "\(path): the config nests deeper than 64 levels") }
        switch node {
        case .mapping(let m):
            for (k, v) in m {
                // Yams builds dictionaries with String keys and traps on any other (`? - z`).
                guard case .scalar = k else { throw Failure(description: "\(path): a key must be a plain name, not a list or a mapping") }
                try countNodes(k, budget: &budget, depth: depth + 1, path: path)
                try countNodes(v, budget: &budget, depth: depth + 1, path: path)
            }
        case .sequence(let s): for v in s { try countNodes(v, budget: &budget, depth: depth + 1, path: path) }
        case .scalar, .alias: break
        }
    }

    static func scalar(_ v: Any) -> String {
        switch v {
        case let b as Bool: return b ? "true" : "false"
        case let i as Int: return String(i)
        case let d as Double: return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : "\(d)"
        default: return "\(v)"
        }
    }
}
