#if canImport(Glibc)
    import Glibc
#endif

/// An output could not be written (no space, no permission, a missing folder, a failed rename):
/// the old file, if any, is still in place. kdtool reports it with exit code 5.
public struct OutputError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(PathCoding.display(path)): cannot write: \(message)" }
}

/// One output file written atomically: bytes go to a temporary file beside the destination
/// (`.NAME.tmp-PID-RANDOM`), every write is checked, and `commit` flushes, fsyncs, renames it into
/// place and fsyncs the folder. Until `commit` succeeds the destination is untouched; a writer
/// that is dropped without committing removes its temporary file, and one that died is cleaned up
/// by the next successful write of the same path.
///
///     let out = try AtomicOutput("preds.csv")
///     try out.write("path,label\n")
///     try out.commit()
public final class AtomicOutput {
    public let path: String
    let temp: String
    var fd: Int32
    var buffer: [UInt8] = []
    var committed = false

    public init(_ path: String) throws {
        self.path = path
        let (dir, base) = Self.split(path)
        temp = "\(dir)/.\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = PathCoding.withCString(temp) { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw OutputError(path, "cannot create a file in \(PathCoding.display(dir)): \(errnoMessage())") }
        buffer.reserveCapacity(1 << 16)
    }

    deinit {
        if !committed {
            if fd >= 0 { close(fd) }
            PathCoding.withCString(temp) { _ = unlink($0) }
        }
    }

    public func write(_ s: String) throws { try write(Array(s.utf8)) }

    public func write(_ bytes: [UInt8]) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 16 { try flush() }
    }

    func flush() throws {
        try buffer.withUnsafeBytes { try Self.writeAll(fd, $0, path: path) }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flush, fsync, close, rename into place, fsync the folder; then remove dead writers' temporaries.
    public func commit() throws {
        try flush()
        guard fsync(fd) == 0 else { throw OutputError(path, "fsync failed: \(errnoMessage())") }
        let rc = close(fd)
        fd = -1
        guard rc == 0 else { throw OutputError(path, "close failed: \(errnoMessage())") }
        let renamed = PathCoding.withCString(temp) { t in PathCoding.withCString(path) { rename(t, $0) } }
        guard renamed == 0 else { throw OutputError(path, "cannot rename the finished file into place: \(errnoMessage())") }
        committed = true
        let (dir, base) = Self.split(path)
        Self.syncFolder(dir)
        Self.removeStaleTemporaries(dir: dir, base: base)
    }

    /// Writes `bytes` to `path` atomically.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let out = try AtomicOutput(path)
        try out.write(bytes)
        try out.commit()
    }

    public static func write(_ text: String, to path: String) throws { try write(Array(text.utf8), to: path) }

    /// Writes all of `bytes` to `fd` (retrying short writes and EINTR); an `OutputError` otherwise.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw OutputError(path, "write failed: \(errnoMessage())") }
            done += n
        }
    }

    public static func split(_ path: String) -> (dir: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    public static func syncFolder(_ dir: String) {
        let dfd = PathCoding.withCString(dir) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    /// Temporaries `.BASE.tmp-PID-…` of writers that are no longer running (ours excepted).
    public static func removeStaleTemporaries(dir: String, base: String) {
        guard let d = PathCoding.withCString(dir, { opendir($0) }) else { return }
        let prefix = ".\(base).tmp-"
        var stale: [String] = []
        while let e = readdir(d) {
            let name = PathCoding.entryName(e)
            guard name.hasPrefix(prefix) else { continue }
            let rest = name.dropFirst(prefix.count)
            guard let pid = Int32(rest.split(separator: "-").first ?? "") else { continue }
            if pid == getpid() || isRunning(pid) { continue }
            stale.append(name)
        }
        closedir(d)
        for name in stale { PathCoding.withCString("\(dir)/\(name)") { _ = unlink($0) } }
    }

    /// Whether `pid` is a live process: one that exists and is not a zombie (a writer killed with
    /// -9 stays a zombie until its parent reaps it, and its temporary file is already abandoned).
    public static func isRunning(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = SafeFile.prefix("/proc/\(pid)/stat", 512) else { return true }
        // "pid (comm) S …": the state follows the last ')'.
        guard let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else { return true }
        return stat[close + 2] != UInt8(ascii: "Z")
    }

    /// Checks before any work starts that `path` can be written: its folder exists and is a
    /// writable folder, and the path itself is not a folder. A run whose output cannot be
    /// written stops here, not after hours of work.
    public static func checkWritable(_ path: String, isFolder: Bool = false) throws {
        let (dir, _) = split(path)
        switch SafeFile.fileType(dir) {
        case .directory: break
        case .missing: throw OutputError(path, "the folder \(PathCoding.display(dir)) does not exist")
        default: throw OutputError(path, "\(PathCoding.display(dir)) is not a folder")
        }
        if !isFolder && SafeFile.fileType(path) == .directory { throw OutputError(path, "is a folder") }
        guard PathCoding.withCString(dir, { access($0, W_OK | X_OK) }) == 0 else {
            throw OutputError(path, "the folder \(PathCoding.display(dir)) is not writable: \(errnoMessage())")
        }
    }
}

/// An exclusive lock on an output path for the length of a run (`.NAME.lock` beside it, `flock`):
/// a second run on the same output fails at once instead of interleaving its logs and checkpoints.
/// The lock goes with the process, so a killed run never leaves a stale one.
public final class OutputLock {
    let fd: Int32
    public let path: String

    public init(_ output: String) throws {
        let (dir, base) = AtomicOutput.split(output)
        path = "\(dir)/.\(base).lock"
        fd = PathCoding.withCString(path) { open($0, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644) }
        guard fd >= 0 else { throw OutputError(output, "cannot create the lock file \(PathCoding.display(path)): \(errnoMessage())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw OutputError(output, "another kdtool run is writing this output (lock \(PathCoding.display(path)) is held)")
        }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// Appends lines to a log (metrics.jsonl) with every write checked; the file is opened per append
/// so a crash loses at most the line being written.
public enum AppendLog {
    public static func append(_ path: String, _ line: String) throws {
        let fd = PathCoding.withCString(path) { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw OutputError(path, errnoMessage()) }
        let bytes = Array((line.hasSuffix("\n") ? line : line + "\n").utf8)
        do {
            try bytes.withUnsafeBytes { try AtomicOutput.writeAll(fd, $0, path: path) }
        } catch {
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw OutputError(path, "close failed: \(errnoMessage())") }
    }
}

/// RFC 4180 fields: a field with a comma, quote, CR or LF (or any byte that is not printable
/// ASCII) is quoted, quotes doubled; the bytes of non-UTF-8 names are written as they are.
public enum CSVField {
    public static func encode(_ s: String) -> [UInt8] {
        let b = PathCoding.bytes(s)
        guard b.contains(where: { $0 == 0x2C || $0 == 0x22 || $0 == 0x0D || $0 == 0x0A || $0 < 0x20 || $0 == 0x7F }) else { return b }
        var out: [UInt8] = [0x22]
        for c in b {
            if c == 0x22 { out.append(0x22) }
            out.append(c)
        }
        out.append(0x22)
        return out
    }
}
