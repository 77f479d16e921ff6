import KDIO

/// MNIST-style IDX files (optionally gzipped): images (magic 0x00000803) and labels (0x00000801).
/// The header's sizes are checked (overflow, caps) and the data read is exactly what they
/// declare, so a small gzip file cannot make kdtool decompress more than the header promises.
public enum IDX {
    public static func images(_ path: String) throws -> (count: Int, height: Int, width: Int, pixels: [UInt8]) {
        let r = try Gzip.Reader(path)
        let c = Checked(path)
        let b = try r.read(16)
        guard b.count == 16 else { throw DataError("\(path): \(b.count) bytes, too short for an IDX image header") }
        let magic = be32(b, 0)
        guard magic == 0x0000_0803 else {
            throw DataError("\(path): IDX magic 0x\(String(magic, radix: 16)), expected 0x803 (unsigned bytes, 3 dimensions)")
        }
        let (n, h, w) = (be32(b, 4), be32(b, 8), be32(b, 12))
        guard h > 0, w > 0, h <= 4096, w <= 4096 else { throw DataError("\(path): implausible dimensions \(n)×\(h)×\(w)") }
        let size = try c.product([n, h, w], "the IDX header's size", cap: Caps.current.expandedBytes)
        let pixels = try r.read(size)
        guard pixels.count == size, try r.read(1).isEmpty else {
            throw DataError(
                "\(path): header declares \(n) images of \(h)×\(w) (\(size) bytes of pixels) but the file holds \(pixels.count == size ? "more" : "\(pixels.count)")"
            )
        }
        return (Int(n), Int(h), Int(w), pixels)
    }

    public static func labels(_ path: String) throws -> [Int] {
        let r = try Gzip.Reader(path)
        let b = try r.read(8)
        guard b.count == 8 else { throw DataError("\(path): \(b.count) bytes, too short for an IDX label header") }
        let magic = be32(b, 0)
        guard magic == 0x0000_0801 else {
            throw DataError("\(path): IDX magic 0x\(String(magic, radix: 16)), expected 0x801 (unsigned bytes, 1 dimension)")
        }
        let n = try Checked(path).count(be32(b, 4), "the label count", cap: Caps.current.expandedBytes)
        let labels = try r.read(n)
        guard labels.count == n, try r.read(1).isEmpty else {
            throw DataError("\(path): header declares \(n) labels but the file holds \(labels.count == n ? "more" : "\(labels.count)")")
        }
        return labels.map { Int($0) }
    }

    static func be32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }
}
