import CZlib

/// zlib streams for deflated sections (Spec §5.1).
enum Deflate {
    /// zlib `compress2` at level 9, so rewriting with the same zlib reproduces the bytes.
    static func compress(_ input: [UInt8]) throws -> [UInt8] {
        var destLen = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(destLen))
        let rc = input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                compress2(dst.baseAddress, &destLen, src.baseAddress, uLong(src.count), 9)
            }
        }
        guard rc == Z_OK else { throw BundleError(.io, "zlib compress2 failed with code \(rc)") }
        out.removeLast(out.count - Int(destLen))
        return out
    }

    /// Inflates into exactly `expected` bytes; more is a bomb, less or a broken stream is a failure.
    static func inflate(_ input: UnsafeRawBufferPointer, expected: Int, context: String, offset: Int) throws -> [UInt8] {
        guard expected <= Format.maxInflatedSize else {
            throw BundleError(
                .inflatedSizeCap, offset: offset,
                "\(context) declares \(expected) inflated bytes, above the cap of \(Format.maxInflatedSize)")
        }
        // The buffer grows with the output instead of trusting the declared size up front, so a
        // tiny stream that claims 256 MiB costs nothing; one spare byte tells "as declared" from "more".
        let limit = expected + 1
        var capacity = min(limit, max(4096, input.count * 8))
        var out = [UInt8](repeating: 0, count: capacity)
        var stream = z_stream()
        guard inflateInit_(&stream, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw BundleError(.io, offset: offset, "\(context): zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        var produced = 0
        var rc: Int32 = Z_OK
        while true {
            rc = out.withUnsafeMutableBufferPointer { dst in
                guard let base = dst.baseAddress else { return Z_BUF_ERROR }  // never empty: capacity ≥ 1
                stream.next_out = base + produced
                stream.avail_out = uInt(dst.count - produced)
                let r = CZlib.inflate(&stream, Z_NO_FLUSH)
                produced = dst.count - Int(stream.avail_out)
                return r
            }
            if rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR) { break }
            if produced < capacity { break }  // input exhausted before the stream ended
            if capacity == limit {
                throw BundleError(
                    .deflateBomb, offset: offset, "\(context) inflates to more than its declared \(expected) bytes")
            }
            capacity = min(limit, capacity * 4)
            out += [UInt8](repeating: 0, count: capacity - out.count)
        }
        if produced > expected {
            throw BundleError(
                .deflateBomb, offset: offset, "\(context) inflates to more than its declared \(expected) bytes")
        }
        let leftIn = Int(stream.avail_in)
        guard rc == Z_STREAM_END, leftIn == 0, produced == expected else {
            let why =
                rc != Z_STREAM_END
                ? "the zlib stream is corrupt or ends early (zlib code \(rc))"
                : leftIn != 0
                    ? "\(leftIn) bytes follow the end of the zlib stream"
                    : "it inflates to \(produced) bytes, not the declared \(expected)"
            throw BundleError(.inflateFailed, offset: offset, "\(context): \(why)")
        }
        out.removeLast(out.count - produced)
        return out
    }
}
