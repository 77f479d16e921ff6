/// Reads the keys of one decoded map against a section schema: each key is taken once, with its
/// type checked; `finish()` rejects keys the schema does not define (Spec §6).
struct Fields {
    let context: String
    let offset: Int?
    private let entries: [String: Value]
    private var used: Set<String> = []

    init(_ entries: [String: Value], context: String, offset: Int?) {
        self.entries = entries
        self.context = context
        self.offset = offset
    }

    init(_ value: Value, context: String, offset: Int?) throws {
        guard case .map(let m) = value else {
            throw BundleError(.invalidField, offset: offset, "\(context): expected a map, found \(value.typeName)")
        }
        self.init(m, context: context, offset: offset)
    }

    func has(_ key: String) -> Bool { entries[key] != nil }

    mutating func take(_ key: String) throws -> Value {
        guard let v = entries[key] else {
            throw BundleError(.missingField, offset: offset, "\(context): required key '\(key)' is missing")
        }
        used.insert(key)
        return v
    }

    func invalid(_ key: String, _ why: String) -> BundleError {
        BundleError(.invalidField, offset: offset, "\(context).\(key): \(why)")
    }

    mutating func string(_ key: String) throws -> String {
        guard case .string(let s) = try take(key) else { throw invalid(key, "expected a string") }
        return s
    }

    mutating func uint(_ key: String, max: UInt64 = UInt64(Int.max)) throws -> Int {
        guard case .uint(let v) = try take(key) else { throw invalid(key, "expected a uint") }
        guard v <= max else { throw invalid(key, "\(v) is above \(max)") }
        return Int(v)
    }

    mutating func int(_ key: String) throws -> Int64 {
        guard case .int(let v) = try take(key) else { throw invalid(key, "expected an int") }
        return v
    }

    mutating func float(_ key: String) throws -> Double {
        guard case .float(let v) = try take(key) else { throw invalid(key, "expected a float") }
        return v
    }

    mutating func bool(_ key: String) throws -> Bool {
        guard case .bool(let v) = try take(key) else { throw invalid(key, "expected a bool") }
        return v
    }

    mutating func floats(_ key: String) throws -> [Float] {
        guard case .floats(let v) = try take(key) else { throw invalid(key, "expected an f32[]") }
        return v
    }

    mutating func ints(_ key: String) throws -> [Int64] {
        guard case .ints(let v) = try take(key) else { throw invalid(key, "expected an i64[]") }
        return v
    }

    mutating func map(_ key: String) throws -> [String: Value] {
        guard case .map(let v) = try take(key) else { throw invalid(key, "expected a map") }
        return v
    }

    mutating func array(_ key: String) throws -> [Value] {
        guard case .array(let v) = try take(key) else { throw invalid(key, "expected an array") }
        return v
    }

    mutating func strings(_ key: String) throws -> [String] {
        try array(key).enumerated().map { i, v in
            guard case .string(let s) = v else { throw invalid("\(key)[\(i)]", "expected a string") }
            return s
        }
    }

    /// An array of maps, each handed to `body` as its own `Fields` and finished after it.
    mutating func records<T>(_ key: String, _ body: (inout Fields) throws -> T) throws -> [T] {
        try array(key).enumerated().map { i, v in
            var f = try Fields(v, context: "\(context).\(key)[\(i)]", offset: offset)
            let t = try body(&f)
            try f.finish()
            return t
        }
    }

    func finish() throws {
        let extra = Value.canonicalOrder(entries.keys.filter { !used.contains($0) })
        if let first = extra.first {
            throw BundleError(
                .unexpectedField, offset: offset,
                "\(context): key '\(first)' is not defined by format 1.0"
                    + (extra.count > 1 ? " (and \(extra.count - 1) more)" : ""))
        }
    }
}
