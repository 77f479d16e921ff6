/// A typed value of the one metadata encoding every section uses (Spec §6).
///
///     let v: Value = .map(["name": .string("conv1"), "shape": .ints([6, 1, 5, 5])])
public indirect enum Value: Equatable, Sendable {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([Value])
    case map([String: Value])
    case floats([Float])
    case ints([Int64])

    public static let maxStringBytes = 1024
    static let maxKeyBytes = 255
    static let maxDepth = 16

    enum Tag: UInt8 {
        case uint = 1, int, float, bool, string, array, map, floats, ints
    }

    /// The type name used in error messages and the spec.
    public var typeName: String {
        switch self {
        case .uint: "uint"
        case .int: "int"
        case .float: "float"
        case .bool: "bool"
        case .string: "string"
        case .array: "array"
        case .map: "map"
        case .floats: "f32[]"
        case .ints: "i64[]"
        }
    }
}

// MARK: - Encoding

extension Value {
    /// The canonical encoding: map keys in bytewise order, fixed-width numbers.
    public func encoded() -> [UInt8] {
        var sink = ByteSink()
        encode(into: &sink)
        return sink.bytes
    }

    func encode(into sink: inout ByteSink) {
        switch self {
        case .uint(let v):
            sink.u8(Tag.uint.rawValue)
            sink.u64(v)
        case .int(let v):
            sink.u8(Tag.int.rawValue)
            sink.i64(v)
        case .float(let v):
            sink.u8(Tag.float.rawValue)
            sink.u64(v.bitPattern)
        case .bool(let v):
            sink.u8(Tag.bool.rawValue)
            sink.u8(v ? 1 : 0)
        case .string(let s):
            sink.u8(Tag.string.rawValue)
            sink.u32(UInt32(s.utf8.count))
            sink.raw(s.utf8)
        case .array(let items):
            sink.u8(Tag.array.rawValue)
            sink.u32(UInt32(items.count))
            for item in items { item.encode(into: &sink) }
        case .map(let entries):
            sink.u8(Tag.map.rawValue)
            sink.u32(UInt32(entries.count))
            for key in Value.canonicalOrder(entries.keys) {
                sink.u16(UInt16(key.utf8.count))
                sink.raw(key.utf8)
                entries[key]?.encode(into: &sink)
            }
        case .floats(let v):
            sink.u8(Tag.floats.rawValue)
            sink.u32(UInt32(v.count))
            for x in v { sink.u32(x.bitPattern) }
        case .ints(let v):
            sink.u8(Tag.ints.rawValue)
            sink.u32(UInt32(v.count))
            for x in v { sink.i64(x) }
        }
    }

    static func canonicalOrder<S: Sequence>(_ keys: S) -> [String] where S.Element == String {
        keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// Checks what the encoding cannot express (string and key lengths, non-finite floats,
    /// depth) so a writer refuses before it produces a file the reader would reject.
    public func validateForWriting(path: String = "value", depth: Int = 0) throws {
        guard depth < Value.maxDepth else {
            throw BundleError(.nestingTooDeep, "\(path): values nest deeper than \(Value.maxDepth)")
        }
        switch self {
        case .float(let v) where !v.isFinite:
            throw BundleError(.nonFinite, "\(path): \(v) is not a finite number")
        case .string(let s) where s.utf8.count > Value.maxStringBytes:
            throw BundleError(.stringTooLong, "\(path): string of \(s.utf8.count) bytes exceeds \(Value.maxStringBytes)")
        case .floats(let v):
            if let bad = v.firstIndex(where: { !$0.isFinite }) {
                throw BundleError(.nonFinite, "\(path)[\(bad)]: \(v[bad]) is not a finite number")
            }
        case .array(let items):
            for (i, item) in items.enumerated() { try item.validateForWriting(path: "\(path)[\(i)]", depth: depth + 1) }
        case .map(let entries):
            for (k, v) in entries {
                guard (1...Value.maxKeyBytes).contains(k.utf8.count) else {
                    throw BundleError(.stringTooLong, "\(path): key '\(k)' must be 1…\(Value.maxKeyBytes) bytes")
                }
                try v.validateForWriting(path: "\(path).\(k)", depth: depth + 1)
            }
        default:
            break
        }
    }
}

// MARK: - Decoding

extension Value {
    /// Decodes one section payload: exactly one map and nothing after it.
    static func decodeSection(_ bytes: UnsafeRawBufferPointer, base: Int, fourcc: String) throws -> [String: Value] {
        var cursor = ByteCursor(bytes, base: base)
        let value = try decode(&cursor, depth: 0, context: fourcc)
        guard case .map(let entries) = value else {
            throw BundleError(.malformedSection, offset: base, "\(fourcc) payload must be a map, found \(value.typeName)")
        }
        guard cursor.remaining == 0 else {
            throw BundleError(
                .malformedSection, offset: cursor.fileOffset,
                "\(fourcc) has \(cursor.remaining) bytes after its map")
        }
        return entries
    }

    static func decode(_ c: inout ByteCursor, depth: Int, context: String) throws -> Value {
        guard depth < maxDepth else {
            throw BundleError(.nestingTooDeep, offset: c.fileOffset, "\(context): values nest deeper than \(maxDepth)")
        }
        let tagOffset = c.fileOffset
        let raw = try c.u8("\(context) tag")
        guard let tag = Tag(rawValue: raw) else {
            throw BundleError(.malformedSection, offset: tagOffset, "\(context): unknown value tag 0x\(String(raw, radix: 16))")
        }
        switch tag {
        case .uint:
            return .uint(try c.u64(context))
        case .int:
            return .int(Int64(bitPattern: try c.u64(context)))
        case .float:
            let v = Double(bitPattern: try c.u64(context))
            guard v.isFinite else { throw BundleError(.nonFinite, offset: tagOffset, "\(context): float \(v) is not finite") }
            return .float(v)
        case .bool:
            let b = try c.u8(context)
            guard b <= 1 else { throw BundleError(.invalidField, offset: tagOffset, "\(context): bool byte \(b) is not 0 or 1") }
            return .bool(b == 1)
        case .string:
            return .string(try decodeString(&c, lengthBytes: 4, max: maxStringBytes, context: context))
        case .array:
            let count = Int(try c.u32("\(context) array count"))
            try checkCount(count, c, context)
            var items: [Value] = []
            for i in 0..<count { items.append(try decode(&c, depth: depth + 1, context: "\(context)[\(i)]")) }
            return .array(items)
        case .map:
            let count = Int(try c.u32("\(context) map count"))
            try checkCount(count, c, context)
            var entries: [String: Value] = [:]
            var previous: String.UTF8View?
            for _ in 0..<count {
                let keyOffset = c.fileOffset
                let key = try decodeString(&c, lengthBytes: 2, max: maxKeyBytes, context: "\(context) key")
                if key.isEmpty { throw BundleError(.stringTooLong, offset: keyOffset, "\(context): empty map key") }
                if let p = previous, !p.lexicographicallyPrecedes(key.utf8) {
                    throw BundleError(
                        .unsortedKeys, offset: keyOffset,
                        "\(context): key '\(key)' does not come strictly after '\(String(p))'")
                }
                previous = key.utf8
                entries[key] = try decode(&c, depth: depth + 1, context: "\(context).\(key)")
            }
            return .map(entries)
        case .floats:
            let count = Int(try c.u32("\(context) f32[] count"))
            let bytes = try c.slice(try Checked.mul(count, 4, "\(context) f32[] size"), "\(context) f32[]")
            var out = [Float](repeating: 0, count: count)
            for i in 0..<count {
                let v = Float(bitPattern: bytes.loadLE(UInt32.self, at: i * 4))
                guard v.isFinite else {
                    throw BundleError(.nonFinite, offset: tagOffset, "\(context)[\(i)]: float \(v) is not finite")
                }
                out[i] = v
            }
            return .floats(out)
        case .ints:
            let count = Int(try c.u32("\(context) i64[] count"))
            let bytes = try c.slice(try Checked.mul(count, 8, "\(context) i64[] size"), "\(context) i64[]")
            return .ints((0..<count).map { Int64(bitPattern: bytes.loadLE(UInt64.self, at: $0 * 8)) })
        }
    }

    private static func checkCount(_ count: Int, _ c: ByteCursor, _ context: String) throws {
        guard count <= c.remaining else {
            throw BundleError(
                .malformedSection, offset: c.fileOffset,
                "\(context): count \(count) exceeds the \(c.remaining) bytes left")
        }
    }

    private static func decodeString(_ c: inout ByteCursor, lengthBytes: Int, max: Int, context: String) throws -> String {
        let offset = c.fileOffset
        let n = lengthBytes == 2 ? Int(try c.u16("\(context) length")) : Int(try c.u32("\(context) length"))
        guard n <= max else {
            throw BundleError(.stringTooLong, offset: offset, "\(context): \(n) bytes exceeds the limit of \(max)")
        }
        let bytes = try c.slice(n, context)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw BundleError(.invalidUTF8, offset: offset, "\(context): \(n) bytes are not valid UTF-8")
        }
        return s
    }
}
