import KDBundle
import KDIO
import KDNN
import KDTensor

/// Named tensors from another framework's checkpoint (a PyTorch `state_dict` saved as
/// safetensors or npz), as Float.
public struct StateDict: Sendable {
    public struct Entry: Sendable {
        public var shape: [Int]
        public var values: [Float]
        public var dtype: String
    }
    public var tensors: [String: Entry]
    public var path: String

    /// Reads `.safetensors` or `.npz` by content (magic bytes), not by extension.
    public static func read(path: String) throws -> StateDict { try read(bytes: try Files.readAll(path), path: path) }

    /// `.safetensors` or `.npz` from bytes; `path` names it in messages.
    public static func read(bytes b: [UInt8], path: String) throws -> StateDict {
        if b.count >= 4, b[0] == 0x50, b[1] == 0x4b { return try npz(b, path: path) }
        return try safetensors(b, path: path)
    }

    // MARK: npz

    static func npz(_ b: [UInt8], path: String) throws -> StateDict {
        var out: [String: Entry] = [:]
        for m in try Zip.read(b, path: path) {
            let name = m.name.hasSuffix(".npy") ? String(m.name.dropLast(4)) : m.name
            let a = try Npy.read(m.bytes, path: "\(path)[\(m.name)]")
            out[name] = Entry(shape: a.shape, values: a.floats, dtype: a.dtype)
        }
        return StateDict(tensors: out, path: path)
    }

    // MARK: safetensors

    /// 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
    /// then the data; every offset is checked against the data block, and overlaps are refused.
    static func safetensors(_ b: [UInt8], path: String) throws -> StateDict {
        let r = ByteReader(bytes: b, path: path)
        try r.check(0, 8, "the safetensors header length")
        let n = r.u64(0)
        guard n <= UInt64(b.count - 8), n <= 100 << 20 else {
            throw InteropError(path, "not a safetensors file: header length \(n) exceeds the file (\(b.count) bytes)")
        }
        let headerEnd = try InteropError.mapping { try Checked(path).sum(8, Checked(path).count(n, "the header length"), "the header") }
        let doc: Any
        do {
            doc = try MiniJSON.parse(Array(b[8..<headerEnd]))
        } catch {
            throw InteropError(path, "not a safetensors file: the header is not JSON (\(error))")
        }
        guard let header = doc as? [String: Any] else { throw InteropError(path, "the safetensors header is not a JSON object") }
        let dataLen = b.count - headerEnd
        var out: [String: Entry] = [:]
        var ranges: [(Int, Int, String)] = []
        for (name, v) in header where name != "__metadata__" {
            guard let t = v as? [String: Any], let dtype = t["dtype"] as? String, let shapeD = t["shape"] as? [Any],
                let offs = t["data_offsets"] as? [Any], offs.count == 2
            else { throw InteropError(path, "tensor '\(name)' lacks dtype, shape or data_offsets") }
            let shape = try shapeD.map { d -> Int in
                guard let x = d as? Double, x >= 0, x == x.rounded(), x < 1e12 else {
                    throw InteropError(path, "tensor '\(name)' has a bad shape \(shapeD)")
                }
                return Int(x)
            }
            guard let sd = offs[0] as? Double, let ed = offs[1] as? Double, let s = Int(exactly: sd), let e = Int(exactly: ed),
                s >= 0, e >= s, e <= dataLen
            else {
                throw InteropError(path, "tensor '\(name)' data_offsets \(offs) fall outside the \(dataLen)-byte data block")
            }
            let (start, end) = (s, e)
            let size: Int
            switch dtype {
            case "F32": size = 4
            case "F16", "BF16": size = 2
            case "F64", "I64": size = 8
            case "I32": size = 4
            case "I8", "U8", "BOOL": size = 1
            default: throw InteropError(path, "tensor '\(name)' has dtype \(dtype) (F32, F16, BF16, F64 and integers only)")
            }
            let (count, bytes) = try InteropError.mapping { try Checked(path).array(shape, each: size, "tensor '\(name)' shape") }
            guard bytes == end - start else {
                throw InteropError(path, "tensor '\(name)': shape \(shape) of \(dtype) needs \(bytes) bytes, offsets give \(end - start)")
            }
            ranges.append((start, end, name))
            let base = headerEnd + start
            let values: [Float] = b.withUnsafeBytes { raw in
                (0..<count).map { i in
                    let at = base + i * size
                    switch dtype {
                    case "F32": return Float(bitPattern: raw.loadLE(UInt32.self, at: at))
                    case "F16": return TensorConversion.halfToFloat(raw.loadLE(UInt16.self, at: at))
                    case "BF16": return TensorConversion.bf16ToFloat(raw.loadLE(UInt16.self, at: at))
                    case "F64": return Float(Double(bitPattern: raw.loadLE(UInt64.self, at: at)))
                    case "I64": return Float(Int64(bitPattern: raw.loadLE(UInt64.self, at: at)))
                    case "I32": return Float(Int32(bitPattern: raw.loadLE(UInt32.self, at: at)))
                    case "I8": return Float(Int8(bitPattern: raw[at]))
                    default: return Float(raw[at])
                    }
                }
            }
            out[name] = Entry(shape: shape, values: values, dtype: dtype)
        }
        ranges.sort { $0.0 < $1.0 }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 < a.1 {
            throw InteropError(path, "tensors '\(a.2)' and '\(b.2)' overlap in the data block")
        }
        return StateDict(tensors: out, path: path)
    }

    /// A safetensors file of f32 tensors, names sorted, data 8-byte aligned as the format asks.
    public static func encodeSafetensors(_ tensors: [(name: String, shape: [Int], values: [Float])]) -> [UInt8] {
        var entries: [String] = []
        var offset = 0
        let sorted = tensors.sorted { $0.name < $1.name }
        for t in sorted {
            var name = ""
            for u in t.name.unicodeScalars {
                switch u {
                case "\"": name += "\\\""
                case "\\": name += "\\\\"
                default: name.unicodeScalars.append(u)
                }
            }
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append(
                "\"\(name)\":{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.values.count * 4)]}")
            offset += t.values.count * 4
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        out.appendLE(UInt64(header.count))
        out += header
        out.reserveCapacity(out.count + offset)
        for t in sorted { for v in t.values { out.appendLE(v.bitPattern) } }
        return out
    }

    public static func encodeNpz(_ tensors: [(name: String, shape: [Int], values: [Float])]) -> [UInt8] {
        Zip.write(tensors.map { Zip.Member(name: $0.name + ".npy", bytes: Npy.encode(shape: $0.shape, floats: $0.values)) })
    }
}

/// How our parameter names correspond to a checkpoint's.
///
/// A map file is a JSON object: exact names (`"fc.weight": "linear.weight"`) and prefix rules whose
/// keys end in a dot (`"stage1.block1.": "layer1.0."`). Without a map, the conventions of
/// torchvision-style CIFAR ResNets are tried after the identical name: `stageS.blockB.` ↔
/// `layerS.(B−1).`, `shortcut.conv`/`shortcut.bn` ↔ `downsample.0`/`.1` or `shortcut.0`/`.1`,
/// `fc` ↔ `linear`.
public struct NameMap: Sendable {
    public var exact: [String: String] = [:]
    public var prefixes: [(String, String)] = []

    public init() {}

    public init(json bytes: [UInt8], path: String) throws {
        let doc: Any
        do { doc = try MiniJSON.parse(bytes) } catch { throw InteropError(path, "not JSON: \(error)") }
        guard let m = doc as? [String: Any] else { throw InteropError(path, "a name map is a JSON object {\"ours\": \"theirs\"}") }
        for (k, v) in m {
            guard let s = v as? String else { throw InteropError(path, "the value of '\(k)' is not a string") }
            if k.hasSuffix(".") { prefixes.append((k, s)) } else { exact[k] = s }
        }
        prefixes.sort { $0.0.count > $1.0.count }
    }

    /// Candidate checkpoint names for one of ours, best first.
    public func candidates(_ name: String) -> [String] {
        if let e = exact[name] { return [e] }
        for (ours, theirs) in prefixes where name.hasPrefix(ours) { return [theirs + name.dropFirst(ours.count)] }
        var out = [name]
        var parts = name.split(separator: ".").map(String.init)
        if parts.count >= 3, parts[0].hasPrefix("stage"), parts[1].hasPrefix("block"), let b = Int(parts[1].dropFirst(5)) {
            parts[0] = "layer" + parts[0].dropFirst(5)
            parts[1] = String(b - 1)
            let base = parts.joined(separator: ".")
            out.append(base)
            for (ours, alts) in [
                ("shortcut.conv.", ["downsample.0.", "shortcut.0."]), ("shortcut.bn.", ["downsample.1.", "shortcut.1."]),
            ] {
                if let r = base.range(of: ours) { for a in alts { out.append(base.replacingCharacters(in: r, with: a)) } }
            }
        }
        if name.hasPrefix("fc.") { out.append("linear." + name.dropFirst(3)) }
        return out
    }
}

extension StateDict {
    /// Copies every parameter and buffer of `model` from this checkpoint. All missing names and
    /// shape mismatches are reported together; checkpoint tensors nothing used are returned
    /// (`num_batches_tracked` counters are expected extras and not listed).
    @discardableResult
    public func load(into model: Model, map: NameMap = NameMap()) throws -> [String] {
        var used = Set<String>()
        var problems: [String] = []
        for name in model.tensorNames {
            guard let target = model.parameters[name] ?? model.buffers[name] else { continue }
            guard let (source, e) = map.candidates(name).lazy.compactMap({ c in tensors[c].map { (c, $0) } }).first else {
                problems.append("missing \(name) \(target.shape) (looked for \(map.candidates(name).joined(separator: ", ")))")
                continue
            }
            used.insert(source)
            // Linear weights may come as [out, in] for a flattened [out, C, H, W] — only the element count must agree.
            guard e.shape == target.shape || (e.values.count == target.count && e.shape.count <= 2 && target.shape.count <= 2) else {
                problems.append("\(name): ours is \(target.shape), \(source) is \(e.shape)")
                continue
            }
            target.pointer.update(from: e.values, count: target.count)
        }
        if !problems.isEmpty {
            throw InteropError(path, "\(problems.count) tensors do not fit the architecture:\n  " + problems.joined(separator: "\n  "))
        }
        return tensors.keys.filter { !used.contains($0) && !$0.hasSuffix("num_batches_tracked") }.sorted()
    }
}
