import CZlib
import KDIO

#if canImport(Glibc)
    import Glibc
#endif

/// Whole-file gzip (or plain) reading through zlib, from regular files only.
enum Gzip {
    /// A stream of a file's decompressed bytes (plain files pass through, as zlib's gzread does).
    final class Reader {
        let path: String
        let file: gzFile

        init(_ path: String) throws {
            self.path = path
            let fd = try SafeFile.openForReading(path)
            guard let f = gzdopen(fd, "rb") else {
                close(fd)
                throw DataError("\(PathCoding.display(path)): cannot open")
            }
            file = f
        }

        deinit { gzclose(file) }

        /// Up to `count` more bytes (fewer only at the end of the data).
        func read(_ count: Int) throws -> [UInt8] {
            var out: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: min(max(count, 1), 1 << 16))
            while out.count < count {
                let want = min(chunk.count, count - out.count)
                let n = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32(want)) }
                if n < 0 {
                    var err: Int32 = 0
                    let msg = gzerror(file, &err).map { String(cString: $0) } ?? "unknown error"
                    throw DataError("\(PathCoding.display(path)): corrupt or truncated gzip data (\(msg))")
                }
                if n == 0 { break }
                out.append(contentsOf: chunk[0..<Int(n)])
            }
            return out
        }
    }

    /// The decompressed bytes of `path`, refusing more than `limit` (default: `Caps.current.expandedBytes`).
    static func read(_ path: String, limit: Int? = nil) throws -> [UInt8] {
        let cap = limit ?? Caps.current.expandedBytes
        let r = try Reader(path)
        let out = try r.read(cap)
        if out.count == cap, try !r.read(1).isEmpty {
            throw DataError("\(PathCoding.display(path)): more than \(cap) bytes after decompression (the limit)")
        }
        return out
    }
}
