import KDIO

#if canImport(Glibc)
    import Glibc
#endif

/// A problem with an interchange file (ONNX, safetensors, npz, npy): the message names the file.
/// Always an invalid input (exit 2).
public struct InteropError: BodiedError {
    public enum Code: String, Sendable {
        /// The file's content is broken or inconsistent.
        case format = "interop.format"
        /// It uses something kdtool does not map (an ONNX op, an opset, a dtype).
        case unsupported = "interop.unsupported"
    }
    public var body: ErrorBody<Code>
    public init(_ path: String, _ message: String, code: Code = .format) { body = ErrorBody(code, file: path, cause: message) }
    public var category: ErrorCategory { .invalidInput }

    /// Runs `body`, reporting a size check's `InputError` as an interchange-file error.
    static func mapping<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as InputError {
            throw InteropError(e.path, e.message)
        }
    }
}

enum Files {
    /// The whole file, refusing anything but a regular file of at most `limit` bytes (default:
    /// `Caps.current.fileBytes`).
    static func readAll(_ path: String, limit: Int? = nil) throws -> [UInt8] {
        try InteropError.mapping { try SafeFile.readAll(path, limit: limit) }
    }

    /// Writes through a temporary file in the same folder, fsync and rename: a failed or
    /// interrupted write never leaves a partial file in place of a good one (throws `OutputError`).
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws { try AtomicOutput.write(bytes, to: path) }
}

/// Little-endian reads with bounds checks.
struct ByteReader {
    let bytes: [UInt8]
    let path: String

    func check(_ at: Int, _ n: Int, _ what: String) throws {
        guard at >= 0, n >= 0, at <= bytes.count, n <= bytes.count - at else {
            throw InteropError(path, "truncated: \(what) needs \(n) bytes at offset \(at), the file has \(bytes.count)")
        }
    }
    func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
    func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
    func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        var x = v.littleEndian
        Swift.withUnsafeBytes(of: &x) { append(contentsOf: $0) }
    }
}

/// The whole file (a regular file only), for callers outside this module.
public func readFileBytes(_ path: String) throws -> [UInt8] { try Files.readAll(path) }

/// Writes a file atomically (temporary file, fsync, rename).
public func writeFileBytes(_ bytes: [UInt8], to path: String) throws { try Files.writeAtomically(bytes, to: path) }
