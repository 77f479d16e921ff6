/// MNIST-style IDX files (optionally gzipped): images (magic 0x00000803) and labels (0x00000801).
public enum IDX {
    public static func images(_ path: String) throws -> (count: Int, height: Int, width: Int, pixels: [UInt8]) {
        let b = try Gzip.read(path)
        guard b.count >= 16 else { throw DataError("\(path): \(b.count) bytes, too short for an IDX image header") }
        let magic = be32(b, 0)
        guard magic == 0x0000_0803 else {
            throw DataError("\(path): IDX magic 0x\(String(magic, radix: 16)), expected 0x803 (unsigned bytes, 3 dimensions)")
        }
        let (n, h, w) = (Int(be32(b, 4)), Int(be32(b, 8)), Int(be32(b, 12)))
        let (size, overflow) = n.multipliedReportingOverflow(by: h * w)
        guard !overflow, h > 0, w > 0, h <= 4096, w <= 4096 else { throw DataError("\(path): implausible dimensions \(n)×\(h)×\(w)") }
        guard b.count == 16 + size else {
            throw DataError("\(path): header declares \(n) images of \(h)×\(w) (\(16 + size) bytes) but the file has \(b.count)")
        }
        return (n, h, w, Array(b[16...]))
    }

    public static func labels(_ path: String) throws -> [Int] {
        let b = try Gzip.read(path)
        guard b.count >= 8 else { throw DataError("\(path): \(b.count) bytes, too short for an IDX label header") }
        let magic = be32(b, 0)
        guard magic == 0x0000_0801 else {
            throw DataError("\(path): IDX magic 0x\(String(magic, radix: 16)), expected 0x801 (unsigned bytes, 1 dimension)")
        }
        let n = Int(be32(b, 4))
        guard b.count == 8 + n else { throw DataError("\(path): header declares \(n) labels but the file has \(b.count - 8)") }
        return b[8...].map { Int($0) }
    }

    static func be32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }
}
