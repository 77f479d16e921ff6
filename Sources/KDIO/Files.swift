#if canImport(Glibc)
    import Glibc
#endif

/// Opening input files without trusting them: only regular files are read. The file is opened
/// with `O_NONBLOCK` (a FIFO or a device would otherwise block in `open` before any check could
/// run) and checked with `fstat` before a byte is read.
public enum SafeFile {
    /// A descriptor for a regular file at `path`, blocking mode restored; the caller closes it.
    public static func openForReading(_ path: String) throws -> Int32 {
        let fd = PathCoding.withCString(path) { open($0, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }
        guard fd >= 0 else { throw InputError(path, errnoMessage()) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let m = errnoMessage()
            close(fd)
            throw InputError(path, m)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw InputError(path, "not a regular file (\(kind(st.st_mode)))")
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }

    /// The size of the regular file behind `fd`.
    public static func size(_ fd: Int32, path: String) throws -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw InputError(path, errnoMessage()) }
        return Int(st.st_size)
    }

    /// The whole of a regular file of at most `limit` bytes (default: `Caps.current.fileBytes`).
    public static func readAll(_ path: String, limit: Int? = nil) throws -> [UInt8] {
        let cap = limit ?? Caps.current.fileBytes
        let fd = try openForReading(path)
        defer { close(fd) }
        let size = try self.size(fd, path: path)
        guard size <= cap else { throw InputError(path, "\(size) bytes is above the limit of \(cap) bytes for this kind of file") }
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw InputError(path, "read failed: \(errnoMessage())") }
            if n == 0 { break }
            done += n
        }
        // A file that shrank while it was read is read as it now is.
        if done < size { out.removeLast(size - done) }
        return out
    }

    /// The first `count` bytes of a regular file (fewer if it is shorter); nil for anything else.
    public static func prefix(_ path: String, _ count: Int) -> [UInt8]? {
        guard let fd = try? openForReading(path) else { return nil }
        defer { close(fd) }
        var b = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = b.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return Array(b[0..<done])
    }

    /// What `stat` says a path is (following links), without opening it.
    public static func fileType(_ path: String) -> FileType {
        var st = stat()
        guard PathCoding.withCString(path, { stat($0, &st) }) == 0 else { return .missing }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .regular
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    public enum FileType: Sendable { case regular, directory, other, missing }

    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "not a plain file"
        }
    }

    /// `path` resolved with `realpath` (links followed), if it exists.
    public static func realPath(_ path: String) -> String? {
        guard let r = PathCoding.withCString(path, { realpath($0, nil) }) else { return nil }
        defer { free(r) }
        return PathCoding.decode(UnsafeRawBufferPointer(start: r, count: strlen(r)))
    }

    /// Reads `length` bytes at `offset` (to the end when `length` is nil) of a file that must lie
    /// inside `folder` once every link is resolved (ONNX external data): a path that leads out of
    /// the folder, by `..`, an absolute path or a symbolic link, is refused, and so is anything
    /// but a regular file. The range is checked against the file's size and
    /// `Caps.current.fileBytes` before anything is allocated.
    public static func readRangeInside(folder: String, relative: String, offset: Int, length: Int?) throws -> [UInt8] {
        let full = (folder.hasSuffix("/") ? folder : folder + "/") + relative
        guard !relative.hasPrefix("/") else { throw InputError(full, "an absolute location leaves the model's folder") }
        guard let root = realPath(folder) else { throw InputError(folder, errnoMessage()) }
        guard let real = realPath(full) else { throw InputError(full, errnoMessage()) }
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard real.hasPrefix(prefix) else {
            throw InputError(
                full, "leaves the model's folder: it resolves to \(PathCoding.display(real)), outside \(PathCoding.display(root))")
        }
        // The resolved path is opened, so a link swapped in after the check cannot redirect the read.
        let fd = try openForReading(real)
        defer { close(fd) }
        let size = try self.size(fd, path: full)
        let n = length ?? max(0, size - offset)
        guard offset <= size, n <= size - offset else {
            throw InputError(full, "offset \(offset) and length \(n) exceed the file's \(size) bytes")
        }
        guard n <= Caps.current.fileBytes else { throw InputError(full, "\(n) bytes is above the limit of \(Caps.current.fileBytes)") }
        var out = [UInt8](repeating: 0, count: n)
        var done = 0
        while done < n {
            let r = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, n - done, off_t(offset + done)) }
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw InputError(full, "read failed after \(done) of \(n) bytes") }
            done += r
        }
        return out
    }
}

func errnoMessage() -> String { String(cString: strerror(errno)) }

/// File names are bytes; Swift strings are Unicode. A name that is not valid UTF-8 is decoded
/// losslessly: each byte that is not part of a valid UTF-8 sequence becomes the private-use scalar
/// U+10FF00 + byte (and so does each byte of a valid sequence that itself decodes to that range),
/// and `withCString` turns those scalars back into the original bytes. Every path kdtool opens goes
/// through `withCString`, so a folder's odd names are opened as they are.
public enum PathCoding {
    static let base: UInt32 = 0x10_FF00

    /// The name of an entry `readdir` returned, read in place and decoded losslessly. A record holds
    /// only as many bytes of `d_name` as its name needs (`d_reclen`), so copying the whole 256-byte
    /// field, as `e.pointee.d_name` does, reads past the end of the last record in the buffer.
    public static func entryName(_ e: UnsafeMutablePointer<dirent>) -> String {
        let field = UnsafeRawPointer(e) + MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        return decode(UnsafeRawBufferPointer(start: field, count: strlen(field.assumingMemoryBound(to: CChar.self))))
    }

    /// The bytes of a name as a String, losslessly.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> String {
        if let s = String(validating: bytes, as: UTF8.self), !s.unicodeScalars.contains(where: { $0.value >= base }) { return s }
        var out = String.UnicodeScalarView()
        var i = 0
        let b = Array(bytes)
        while i < b.count {
            let n = sequenceLength(b, i)
            if n > 0, let s = String(validating: b[i..<(i + n)], as: UTF8.self), let u = s.unicodeScalars.first, u.value < base {
                out.append(u)
                i += n
            } else {
                out.append(Unicode.Scalar(base + UInt32(b[i]))!)
                i += 1
            }
        }
        return String(out)
    }

    public static func decode(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { decode($0) } }

    /// The length of the UTF-8 sequence its lead byte announces (0 for a byte that cannot lead).
    static func sequenceLength(_ b: [UInt8], _ i: Int) -> Int {
        let lead = b[i]
        let n =
            lead < 0x80 ? 1 : lead >= 0xC2 && lead < 0xE0 ? 2 : lead >= 0xE0 && lead < 0xF0 ? 3 : lead >= 0xF0 && lead < 0xF5 ? 4 : 0
        return i + n <= b.count ? n : 0
    }

    /// The original bytes of a path (inverse of `decode`).
    public static func bytes(_ path: String) -> [UInt8] {
        guard path.unicodeScalars.contains(where: { $0.value >= base }) else { return Array(path.utf8) }
        var out: [UInt8] = []
        for u in path.unicodeScalars {
            if u.value >= base && u.value <= base + 0xFF {
                out.append(UInt8(u.value - base))
            } else {
                out.append(contentsOf: String(u).utf8)
            }
        }
        return out
    }

    /// Whether the path holds bytes that are not UTF-8 (and so needs `path_b64` in JSON).
    public static func isRaw(_ path: String) -> Bool { path.unicodeScalars.contains { $0.value >= base && $0.value <= base + 0xFF } }

    /// Calls `body` with the path's original bytes as a C string.
    public static func withCString<R>(_ path: String, _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        guard isRaw(path) else { return try path.withCString(body) }
        var b = bytes(path).map { CChar(bitPattern: $0) }
        b.append(0)
        return try b.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// A readable form for messages: bytes that are not UTF-8 shown as `\xNN`, control characters escaped.
    public static func display(_ path: String) -> String {
        var out = ""
        for u in path.unicodeScalars {
            if u.value >= base && u.value <= base + 0xFF {
                out += "\\x" + hex2(UInt8(u.value - base))
            } else if u.value < 0x20 || u.value == 0x7F {
                out += "\\x" + hex2(UInt8(u.value))
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    static func hex2(_ v: UInt8) -> String {
        let d = Array("0123456789abcdef")
        return String([d[Int(v >> 4)], d[Int(v & 15)]])
    }

    /// Standard base64 of the path's original bytes.
    public static func base64(_ path: String) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        let b = bytes(path)
        var out = ""
        var i = 0
        while i < b.count {
            let n = min(3, b.count - i)
            let v = (UInt32(b[i]) << 16) | (n > 1 ? UInt32(b[i + 1]) << 8 : 0) | (n > 2 ? UInt32(b[i + 2]) : 0)
            out.append(table[Int(v >> 18 & 63)])
            out.append(table[Int(v >> 12 & 63)])
            out.append(n > 1 ? table[Int(v >> 6 & 63)] : "=")
            out.append(n > 2 ? table[Int(v & 63)] : "=")
            i += 3
        }
        return out
    }
}
