import CZlib

/// Whole-file gzip (or plain) reading through zlib.
enum Gzip {
    /// The decompressed bytes of `path`; plain files pass through (zlib's gzread does that).
    static func read(_ path: String, limit: Int = 1 << 30) throws -> [UInt8] {
        guard let f = gzopen(path, "rb") else { throw DataError("\(path): cannot open") }
        defer { gzclose(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(f, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var err: Int32 = 0
                let msg = gzerror(f, &err).map { String(cString: $0) } ?? "unknown error"
                throw DataError("\(path): corrupt or truncated gzip data (\(msg))")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
            if out.count > limit { throw DataError("\(path): more than \(limit) bytes after decompression") }
        }
        return out
    }
}
