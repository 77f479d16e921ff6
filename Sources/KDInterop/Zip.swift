import CZlib
import KDIO

/// Reading and writing the zip archives numpy's `.npz` uses: stored or deflated members, zip64
/// sizes and offsets, every length bounds-checked against the file.
enum Zip {
    struct Member {
        var name: String
        var bytes: [UInt8]
    }

    static func read(_ b: [UInt8], path: String, limit: Int = Caps.current.expandedBytes) throws -> [Member] {
        let r = ByteReader(bytes: b, path: path)
        let c = Checked(path)
        // Every size and offset below comes from the file: 64-bit ones through `Checked`.
        func u64(_ at: Int, _ what: String) throws -> Int { try InteropError.mapping { try c.count(r.u64(at), what) } }
        // End of central directory: the last 0x06054b50 within the final 64 KiB + 22 bytes.
        guard b.count >= 22 else { throw InteropError(path, "not a zip archive (too short)") }
        var eocd = -1
        var i = b.count - 22
        while i >= max(0, b.count - 22 - 65_535) {
            if b[i] == 0x50, b[i + 1] == 0x4b, b[i + 2] == 5, b[i + 3] == 6 {
                eocd = i
                break
            }
            i -= 1
        }
        guard eocd >= 0 else { throw InteropError(path, "not a zip archive (no end-of-central-directory record)") }
        var count = r.u16(eocd + 10)
        var cdOffset = r.u32(eocd + 16)
        if count == 0xffff || cdOffset == 0xffff_ffff, eocd >= 20, r.u32(eocd - 20) == 0x0706_4b50 {
            let z64 = try u64(eocd - 20 + 8, "the zip64 record offset")
            try r.check(z64, 56, "the zip64 end-of-central-directory record")
            guard r.u32(z64) == 0x0606_4b50 else { throw InteropError(path, "broken zip64 end-of-central-directory record") }
            count = try u64(z64 + 32, "the zip64 entry count")
            cdOffset = try u64(z64 + 48, "the zip64 directory offset")
        }
        var members: [Member] = []
        var at = cdOffset
        var total = 0
        for _ in 0..<count {
            try r.check(at, 46, "a central directory entry")
            guard r.u32(at) == 0x0201_4b50 else { throw InteropError(path, "corrupt zip central directory at byte \(at)") }
            let method = r.u16(at + 10)
            var compressed = r.u32(at + 20)
            var size = r.u32(at + 24)
            let nameLen = r.u16(at + 28)
            let extraLen = r.u16(at + 30)
            let commentLen = r.u16(at + 32)
            var local = r.u32(at + 42)
            try r.check(at + 46, nameLen + extraLen + commentLen, "a central directory name")
            let name = String(decoding: b[(at + 46)..<(at + 46 + nameLen)], as: UTF8.self)
            // zip64 extra field: the 0xFFFFFFFF fields follow in order size, compressed, offset.
            var e = at + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = r.u16(e)
                let len = r.u16(e + 2)
                if id == 1 {
                    var p = e + 4
                    if size == 0xffff_ffff, p + 8 <= e + 4 + len {
                        size = try u64(p, "a zip64 size")
                        p += 8
                    }
                    if compressed == 0xffff_ffff, p + 8 <= e + 4 + len {
                        compressed = try u64(p, "a zip64 compressed size")
                        p += 8
                    }
                    if local == 0xffff_ffff, p + 8 <= e + 4 + len { local = try u64(p, "a zip64 header offset") }
                }
                e += 4 + len
            }
            at = extraEnd + commentLen
            try r.check(local, 30, "the local header of '\(name)'")
            guard r.u32(local) == 0x0403_4b50 else { throw InteropError(path, "corrupt local header of '\(name)'") }
            let dataStart = try InteropError.mapping { try c.sum(local, 30 + r.u16(local + 26) + r.u16(local + 28), "member '\(name)'") }
            try r.check(dataStart, compressed, "member '\(name)'")
            // Sizes come from the file: checked before anything is allocated. Deflate expands at most
            // 1032:1, so a member that declares more than that of its compressed bytes is lying.
            guard size <= limit - total else {
                throw InteropError(path, "member '\(name)' declares \(size) bytes; the members may hold at most \(limit) bytes in all")
            }
            guard method != 8 || size / 1032 <= compressed + 1 else {
                throw InteropError(
                    path, "member '\(name)' declares \(size) bytes from \(compressed) compressed bytes, more than deflate can expand to")
            }
            total += size
            let stored = Array(b[dataStart..<(dataStart + compressed)])
            switch method {
            case 0:
                guard compressed == size else { throw InteropError(path, "stored member '\(name)' has inconsistent sizes") }
                members.append(Member(name: name, bytes: stored))
            case 8: members.append(Member(name: name, bytes: try inflateRaw(stored, expected: size, path: "\(path)[\(name)]")))
            default: throw InteropError(path, "member '\(name)' uses compression method \(method) (stored and deflate only)")
            }
        }
        return members
    }

    static func inflateRaw(_ input: [UInt8], expected: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: expected + 1)
        var s = z_stream()
        guard inflateInit2_(&s, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw InteropError(path, "zlib inflateInit2 failed")
        }
        defer { inflateEnd(&s) }
        var input = input
        let rc = input.withUnsafeMutableBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                s.next_in = src.baseAddress
                s.avail_in = uInt(src.count)
                s.next_out = dst.baseAddress
                s.avail_out = uInt(dst.count)
                return inflate(&s, Z_FINISH)
            }
        }
        let produced = out.count - Int(s.avail_out)
        guard rc == Z_STREAM_END, produced == expected else {
            throw InteropError(path, "corrupt deflate data (zlib code \(rc), \(produced) bytes instead of \(expected))")
        }
        out.removeLast()
        return out
    }

    /// A zip of stored members (what `numpy.savez` writes), with CRC-32s.
    static func write(_ members: [Member]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for m in members {
            let offset = out.count
            let crc = m.bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
            let name = Array(m.name.utf8)
            func common(_ into: inout [UInt8]) {
                into.appendLE(UInt16(20))  // version needed
                into.appendLE(UInt16(0))  // flags
                into.appendLE(UInt16(0))  // stored
                into.appendLE(UInt16(0))  // time
                into.appendLE(UInt16(0x21))  // date: 1980-01-01
                into.appendLE(crc)
                into.appendLE(UInt32(m.bytes.count))
                into.appendLE(UInt32(m.bytes.count))
                into.appendLE(UInt16(name.count))
                into.appendLE(UInt16(0))  // extra
            }
            out.appendLE(UInt32(0x0403_4b50))
            common(&out)
            out += name
            out += m.bytes
            central.appendLE(UInt32(0x0201_4b50))
            central.appendLE(UInt16(20))  // version made by
            common(&central)
            central.appendLE(UInt16(0))  // comment
            central.appendLE(UInt16(0))  // disk
            central.appendLE(UInt16(0))  // internal attributes
            central.appendLE(UInt32(0))  // external attributes
            central.appendLE(UInt32(offset))
            central += name
        }
        let cdOffset = out.count
        out += central
        out.appendLE(UInt32(0x0605_4b50))
        out.appendLE(UInt16(0))
        out.appendLE(UInt16(0))
        out.appendLE(UInt16(members.count))
        out.appendLE(UInt16(members.count))
        out.appendLE(UInt32(central.count))
        out.appendLE(UInt32(cdOffset))
        out.appendLE(UInt16(0))
        return out
    }
}
