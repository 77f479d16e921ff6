import KDBundle
import KDIO
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Teacher logits on an un-augmented training set, kept on disk between runs so a sweep over
/// seeds, temperatures or methods computes each teacher once. A file is keyed by SHA-256 of the
/// teachers' content digests, the data's digest and size, and the input normalization; its
/// header repeats the key, so a file that does not match (or is damaged) is ignored and rewritten.
///
///     let store = TeacherLogitStore(directory: TeacherLogitStore.defaultDirectory())
///     let key = TeacherLogitStore.key(teachers: digests, data: set.digest, count: set.count, normalization: "…")
public struct TeacherLogitStore: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// `$XDG_CACHE_HOME/kdtool/teachers`, else `~/.cache/kdtool/teachers` (`--teacher-cache-dir`
    /// chooses another).
    public static func defaultDirectory() -> String {
        if let x = getenv("XDG_CACHE_HOME") { return String(cString: x) + "/kdtool/teachers" }
        if let h = getenv("HOME") { return String(cString: h) + "/.cache/kdtool/teachers" }
        return ".kdtool-cache/teachers"
    }

    public static func key(teachers: [String], data: String, count: Int, classes: Int, normalization: String) -> String {
        var h = SHA256()
        // Kernel choices that change results in the last bits (KernelPolicy) are part of the key.
        let kernels = KernelPolicy.changes.isEmpty ? "" : "\n" + KernelPolicy.changes.joined(separator: ",")
        h.update(
            Array(
                "kdtool teacher logits v1\n\(teachers.joined(separator: ","))\n\(data)\n\(count)\n\(classes)\n\(normalization)\(kernels)"
                    .utf8))
        return h.finalize().withUnsafeBytes { SHA256.hex($0) }
    }

    public func path(_ key: String) -> String { "\(directory)/\(key).logits" }

    static let magic = Array("KDTLOGITS1\n".utf8)

    /// Logits [example][teacher][class], or nil when there is no matching file.
    public func load(key: String, count: Int, teachers: Int, classes: Int) -> [Float]? {
        guard let fd = try? SafeFile.openForReading(path(key)) else { return nil }
        defer { close(fd) }
        let header = Self.magic + Array(key.utf8) + [10]
        let values = count * teachers * classes
        let expected = header.count + values * 4
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) == expected else { return nil }
        var bytes = [UInt8](repeating: 0, count: expected)
        var done = 0
        while done < expected {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, expected - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        guard Array(bytes[0..<header.count]) == header else { return nil }
        var out = [Float](repeating: 0, count: values)
        bytes.withUnsafeBytes { raw in
            for i in 0..<values {
                out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: header.count + 4 * i, as: UInt32.self)))
            }
        }
        guard out.allSatisfy(\.isFinite) else { return nil }
        return out
    }

    /// Writes atomically (temporary file and rename); a failure only costs the cache.
    @discardableResult
    public func save(key: String, logits: [Float]) -> Bool {
        _ = directory.split(separator: "/").reduce(directory.hasPrefix("/") ? "" : ".") { dir, part in
            let next = dir + "/" + part
            mkdir(next, 0o755)
            return next
        }
        var bytes = Self.magic + Array(key.utf8) + [10]
        bytes.reserveCapacity(bytes.count + logits.count * 4)
        for v in logits {
            let b = v.bitPattern.littleEndian
            bytes += [UInt8(b & 0xff), UInt8(b >> 8 & 0xff), UInt8(b >> 16 & 0xff), UInt8(b >> 24)]
        }
        // A cache: a write that fails (a full disk) only means the teacher is computed again next time.
        return (try? AtomicOutput.write(bytes, to: path(key))) != nil
    }
}
