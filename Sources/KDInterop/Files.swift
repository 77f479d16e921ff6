#if canImport(Glibc)
    import Glibc
#endif

/// A problem with an interchange file (ONNX, safetensors, npz, npy): the message names the file.
public struct InteropError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ path: String, _ message: String) { description = "\(path): \(message)" }
}

enum Files {
    /// The whole file, refusing anything but a regular file below `limit` bytes.
    static func readAll(_ path: String, limit: Int = 4 << 30) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw InteropError(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw InteropError(path, String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw InteropError(path, "not a regular file") }
        guard Int(st.st_size) <= limit else { throw InteropError(path, "\(st.st_size) bytes is above the limit of \(limit)") }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw InteropError(path, String(cString: strerror(errno))) }
            if n == 0 { break }
            done += n
        }
        return done == out.count ? out : Array(out[0..<done])
    }

    /// Writes through a temporary file in the same folder, fsync and rename: a failed or
    /// interrupted write never leaves a partial file in place of a good one.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let tmp = "\(dir.isEmpty ? "/" : dir)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw InteropError(path, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            if !ok {
                close(fd)
                unlink(tmp)
            }
        }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw InteropError(path, "write failed: \(String(cString: strerror(errno)))") }
            done += n
        }
        guard fsync(fd) == 0, close(fd) == 0 else { throw InteropError(path, "cannot flush: \(String(cString: strerror(errno)))") }
        ok = true
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw InteropError(path, "cannot rename into place: \(String(cString: strerror(errno)))")
        }
    }
}

/// Little-endian reads with bounds checks.
struct ByteReader {
    let bytes: [UInt8]
    let path: String

    func check(_ at: Int, _ n: Int, _ what: String) throws {
        guard at >= 0, n >= 0, at <= bytes.count, n <= bytes.count - at else {
            throw InteropError(path, "truncated: \(what) needs bytes \(at)..<\(at + n) of \(bytes.count)")
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
