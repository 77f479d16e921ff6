import KDBundle
import KDIO

/// NumPy `.npy` arrays (format 1.0–3.0): little-endian f32, f16, f64 and integer dtypes, C order.
///
///     let a = try Npy.read(bytes, path: "x.npy")     // a.shape, a.floats
///     let bytes = Npy.encode(shape: [2, 3], floats: values)
public enum Npy {
    public struct Array: Sendable {
        public var shape: [Int]
        /// numpy's dtype string, e.g. `<f4`.
        public var dtype: String
        /// The values as Float (integers converted, f16 widened, f64 narrowed).
        public var floats: [Float]
    }

    public static func read(path: String) throws -> Array { try read(Files.readAll(path), path: path) }

    public static func read(_ b: [UInt8], path: String) throws -> Array {
        let r = ByteReader(bytes: b, path: path)
        try r.check(0, 10, "the .npy preamble")
        guard b[0] == 0x93, Swift.Array(b[1..<6]) == Swift.Array("NUMPY".utf8) else {
            throw InteropError(path, "not a .npy file (no \\x93NUMPY magic)")
        }
        let major = Int(b[6])
        guard (1...3).contains(major) else { throw InteropError(path, ".npy format version \(major).\(b[7]) is not supported") }
        let start = major == 1 ? 10 : 12
        try r.check(0, start, "the .npy header length")
        let headerLen = major == 1 ? r.u16(8) : r.u32(8)
        try r.check(start, headerLen, "the .npy header")
        let header = String(decoding: b[start..<start + headerLen], as: UTF8.self)
        let descr = try field(header, "descr", path: path)
        let fortran = try field(header, "fortran_order", path: path)
        let shapeText = try field(header, "shape", path: path)
        guard fortran == "False" else { throw InteropError(path, "Fortran-order arrays are not supported; save with C order") }
        let dims = shapeText.trimmingCharacters(in: "()").split(separator: ",").map { $0.trimmingCharacters(in: " ") }.filter {
            !$0.isEmpty
        }
        guard dims.count <= 32 else { throw InteropError(path, "shape \(shapeText.prefix(80)) has more than 32 dimensions") }
        var shape: [Int] = []
        for d in dims {
            guard let v = Int(d), v >= 0 else { throw InteropError(path, "bad shape \(shapeText.prefix(80)) in the .npy header") }
            shape.append(v)
        }
        let dtype = descr.trimmingCharacters(in: "'\"")
        let (size, convert) = try converter(dtype, path: path)
        let (count, bytes) = try InteropError.mapping { try Checked(path).array(shape, each: size, "shape \(shape) of \(dtype)") }
        let data = start + headerLen
        guard bytes <= b.count - data else {
            throw InteropError(path, "truncated: shape \(shape) of \(dtype) needs \(bytes) bytes, the file has \(b.count - data)")
        }
        let floats = b.withUnsafeBytes { raw in (0..<count).map { convert(raw, data + $0 * size) } }
        return Array(shape: shape, dtype: dtype, floats: floats)
    }

    /// Element size and reader for a little-endian (or byte-order-free) numpy dtype.
    static func converter(_ dtype: String, path: String) throws -> (Int, (UnsafeRawBufferPointer, Int) -> Float) {
        switch dtype {
        case "<f4": return (4, { Float(bitPattern: $0.loadLE(UInt32.self, at: $1)) })
        case "<f2": return (2, { TensorConversion.halfToFloat($0.loadLE(UInt16.self, at: $1)) })
        case "<f8": return (8, { Float(Double(bitPattern: $0.loadLE(UInt64.self, at: $1))) })
        case "<i8": return (8, { Float(Int64(bitPattern: $0.loadLE(UInt64.self, at: $1))) })
        case "<i4": return (4, { Float(Int32(bitPattern: $0.loadLE(UInt32.self, at: $1))) })
        case "|i1": return (1, { Float(Int8(bitPattern: $0[$1])) })
        case "|u1", "|b1": return (1, { Float($0[$1]) })
        default:
            throw InteropError(path, "dtype '\(dtype)' is not supported (float32 '<f4', float16 '<f2', float64 '<f8', integers)")
        }
    }

    static func field(_ header: String, _ key: String, path: String) throws -> String {
        guard let k = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\"") else {
            throw InteropError(path, ".npy header has no '\(key)': \(header)")
        }
        var rest = header[k.upperBound...].drop { $0 == " " || $0 == ":" }
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { throw InteropError(path, "unterminated shape in the .npy header") }
            return String(rest[...close])
        }
        if let q = rest.first, q == "'" || q == "\"" {
            rest = rest.dropFirst()
            guard let end = rest.firstIndex(of: q) else { throw InteropError(path, "unterminated string in the .npy header") }
            return String(rest[..<end])
        }
        return String(rest.prefix { $0 != "," && $0 != "}" }).trimmingCharacters(in: " ")
    }

    /// A version 1.0 `.npy` of little-endian float32 values.
    public static func encode(shape: [Int], floats: [Float]) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
        let pad = (64 - (10 + header.utf8.count + 1) % 64) % 64
        header += String(repeating: " ", count: pad) + "\n"
        var out: [UInt8] = [0x93] + Swift.Array("NUMPY".utf8) + [1, 0]
        out.appendLE(UInt16(header.utf8.count))
        out += Swift.Array(header.utf8)
        out.reserveCapacity(out.count + floats.count * 4)
        for v in floats { out.appendLE(v.bitPattern) }
        return out
    }

    public static func write(_ path: String, shape: [Int], floats: [Float]) throws {
        try Files.writeAtomically(encode(shape: shape, floats: floats), to: path)
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
