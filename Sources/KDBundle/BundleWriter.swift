import KDIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes bundles atomically (Spec §10): temporary file in the destination directory, fsync,
/// rename, fsync of the directory. The previous file survives any crash.
public enum BundleWriter {
    public struct Result: Sendable {
        public var fileDigest: String
        public var contentDigest: String
        public var size: Int
    }

    /// Serialises `contents` to bytes (no file involved).
    public static func encode(_ contents: BundleContents) throws -> [UInt8] {
        var out: [UInt8] = []
        _ = try serialise(contents) { out.append(contentsOf: $0) }
        return out
    }

    @discardableResult
    public static func write(_ contents: BundleContents, to path: String) throws -> Result {
        try write(contents, to: path, crashAfterBytes: nil, pid: getpid())
    }

    /// A writer killed part-way, for tests: stops after `crashAfterBytes` and leaves its temporary
    /// file behind exactly as `kill -9` would, named with `pid`.
    struct SimulatedCrash: Error {}

    static func write(_ contents: BundleContents, to path: String, crashAfterBytes: Int?, pid: Int32) throws -> Result {
        let (dir, base) = splitPath(path)
        let tmp = "\(dir)/.\(base).tmp-\(pid)-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OutputError(path, "cannot create \(tmp): \(errnoString())") }
        var ok = false
        defer {
            if !ok {
                close(fd)
                unlink(tmp)
            }
        }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        func flush() throws {
            try buffer.withUnsafeBytes { try writeAll(fd, $0, path: tmp) }
            buffer.removeAll(keepingCapacity: true)
        }
        var emitted = 0
        var result = try serialise(contents) { chunk in
            emitted += chunk.count
            if let limit = crashAfterBytes, emitted > limit {
                try flush()
                ok = true  // a killed process cleans nothing up
                close(fd)
                throw SimulatedCrash()
            }
            if chunk.count >= 1 << 20 {
                try flush()
                try writeAll(fd, chunk, path: tmp)
            } else {
                buffer.append(contentsOf: chunk)
                if buffer.count >= 1 << 20 { try flush() }
            }
        }
        try flush()
        guard fsync(fd) == 0 else { throw OutputError(path, "fsync failed: \(errnoString())") }
        guard close(fd) == 0 else {
            ok = true
            unlink(tmp)
            throw OutputError(path, "close failed: \(errnoString())")
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            ok = true
            throw OutputError(path, "cannot rename \(tmp) into place: \(errnoString())")
        }
        ok = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
        removeStaleTemporaries(dir: dir, base: base)
        result.size = try fileSize(path)
        return result
    }

    // MARK: Layout

    /// Produces the file in order through `emit`, hashing as it goes; validates first so an invalid
    /// bundle is never written.
    static func serialise(_ c: BundleContents, emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Result {
        try check(c)
        var sha = SHA256()
        func out(_ bytes: UnsafeRawBufferPointer) throws {
            sha.update(bytes)
            try emit(bytes)
        }
        func out(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try out($0) } }

        // Tensor table: offsets and CRCs.
        var infos: [TensorInfo] = []
        var end = 0
        for t in c.tensors {
            let offset = align(end, Format.tensorAlignment)
            infos.append(
                TensorInfo(
                    name: t.name, dtype: t.dtype, shape: t.shape, offset: offset, length: t.bytes.count,
                    crc32: crc32(t.bytes), quant: t.quant))
            end = offset + t.bytes.count
        }
        let dataLength = align(end, Format.tensorAlignment)
        let tdir = Value.map([
            "tensors": .array(
                infos.map { t in
                    var m: [String: Value] = [
                        "crc32": .uint(UInt64(t.crc32)), "dtype": .uint(UInt64(t.dtype.rawValue)),
                        "length": .uint(UInt64(t.length)), "name": .string(t.name), "offset": .uint(UInt64(t.offset)),
                        "shape": .ints(t.shape.map(Int64.init)),
                    ]
                    if let q = t.quant { m["quant"] = .uint(UInt64(q)) }
                    return .map(m)
                })
        ])

        // Sections: known ones in spec order, then unknown ones verbatim.
        var sections: [(fourcc: String, flags: UInt32, stored: [UInt8], length: Int)] = []
        for (fourcc, critical, payload) in [("TDIR", true, tdir.encoded())] + c.encodedSections() {
            let deflated = c.deflate.contains(fourcc)
            let stored = deflated ? try Deflate.compress(payload) : payload
            let flags = (critical ? Format.flagCritical : 0) | (deflated ? Format.flagDeflated : 0)
            sections.append((fourcc, flags, stored, payload.count))
        }
        for raw in c.unknownSections {
            sections.append((raw.fourcc, raw.deflated ? Format.flagDeflated : 0, raw.stored, raw.length))
        }

        var position = Format.dataOffset + dataLength
        var directory = ByteSink()
        for s in sections {
            directory.raw(s.fourcc.utf8)
            directory.u32(s.flags)
            directory.u64(UInt64(position))
            directory.u64(UInt64(s.stored.count))
            directory.u64(UInt64(s.length))
            directory.u32(crc32(s.stored))
            directory.zeros(12)
            position += s.stored.count
        }
        let directoryOffset = position
        let fileLength = directoryOffset + directory.bytes.count + Format.trailerSize

        var required: UInt64 = 0
        if c.tensors.contains(where: { $0.quant != nil }) { required |= Format.requiredQuantized }
        let optional: UInt64 = sections.contains { $0.flags & Format.flagDeflated != 0 } ? Format.optionalDeflate : 0
        var header = ByteSink()
        header.raw(Format.magic)
        header.u16(Format.major)
        // Format 1.1 added op set 2; a file whose graph needs only op set 1 stays 1.0, byte for byte.
        header.u16((c.graph?.requiredOpset ?? 1) >= 2 ? Format.minor : 0)
        header.u32(UInt32(Format.headerSize))
        header.u64(required)
        header.u64(optional)
        header.u64(UInt64(fileLength))
        header.u64(UInt64(Format.dataOffset))
        header.u64(UInt64(dataLength))
        header.u64(UInt64(directoryOffset))
        header.u32(UInt32(sections.count))
        header.u32(UInt32(Format.directoryEntrySize))
        header.zeros(52)
        header.u32(crc32(header.bytes))
        header.zeros(Format.dataOffset - Format.headerSize)
        try out(header.bytes)

        var written = 0
        for (t, info) in zip(c.tensors, infos) {
            if info.offset > written { try out([UInt8](repeating: 0, count: info.offset - written)) }
            try out(t.bytes)
            written = info.offset + info.length
        }
        if dataLength > written { try out([UInt8](repeating: 0, count: dataLength - written)) }
        for s in sections { try out(s.stored) }
        try out(directory.bytes)
        let digest = sha.finalize()
        try digest.withUnsafeBytes { try emit($0) }

        var content = ContentDigest()
        let payloads = Dictionary(uniqueKeysWithValues: c.encodedSections().map { ($0.fourcc, $0.payload) })
        for fourcc in ["GRPH", "LABL", "PREP"] { content.addSection(fourcc, payloads[fourcc]) }
        content.beginTensors(count: infos.count)
        for (t, info) in zip(c.tensors, infos) {
            t.bytes.withUnsafeBytes {
                content.addTensor(info, quant: info.quant.flatMap { c.quantization?.params[$0] }, bytes: $0)
            }
        }
        return Result(fileDigest: digest.hexString, contentDigest: content.finish(), size: fileLength)
    }

    /// The reader's rules applied before writing, so the writer never emits a file the reader rejects.
    static func check(_ c: BundleContents) throws {
        var names = Set<String>()
        for t in c.tensors {
            guard !t.name.isEmpty, t.name.utf8.count <= Value.maxStringBytes else {
                throw BundleError(.invalidField, "tensor name '\(t.name)' must be 1…1024 bytes")
            }
            guard names.insert(t.name).inserted else { throw BundleError(.duplicateName, "tensor '\(t.name)' appears twice") }
            guard t.shape.count <= Format.maxRank else {
                throw BundleError(.rankTooLarge, "tensor '\(t.name)' has rank \(t.shape.count), above 8")
            }
            var n = t.dtype.size
            for d in t.shape {
                guard d >= 0 else { throw BundleError(.invalidField, "tensor '\(t.name)' has negative dimension \(d)") }
                n = try Checked.mul(n, d, "size of tensor '\(t.name)'")
            }
            guard n == t.bytes.count else {
                throw BundleError(
                    .shapeLengthMismatch, "tensor '\(t.name)' \(t.dtype)\(t.shape) needs \(n) bytes, has \(t.bytes.count)")
            }
        }
        let sections = c.encodedSections()
        for (fourcc, _, payload) in sections {
            try payload.withUnsafeBytes { _ = try Value.decodeSection($0, base: 0, fourcc: fourcc) }
        }
        for (value, name) in [(c.provenance?.value, "PROV"), (c.metadata?.value, "META")] {
            try value?.validateForWriting(path: name)
        }
        for raw in c.unknownSections {
            guard raw.fourcc.utf8.count == 4, raw.fourcc.utf8.allSatisfy({ (65...90).contains($0) || (48...57).contains($0) }),
                !Format.knownFourccs.contains(raw.fourcc)
            else { throw BundleError(.invalidField, "unknown section name '\(raw.fourcc)' is invalid") }
        }
        // Cross-checks are the reader's: write to memory and let it judge the result would double
        // the I/O, so the same functions run here on the values.
        if let g = c.graph { try g.validate(tensorNames: names) }
        try c.verticals?.check(classCount: c.labels?.classes.count ?? 0, offset: nil)
        let nodes = Set(c.graph?.nodes.map(\.name) ?? [])
        for p in c.fspPairs?.pairs ?? [] {
            for n in [p.first, p.second] where !nodes.contains(n) {
                throw BundleError(.unknownNode, "FSP pair \(p.first):\(p.second) names '\(n)', which is not a graph node")
            }
        }
        if let h = c.hints {
            if let n = (h.hints + h.guided).first(where: { !nodes.contains($0) }) {
                throw BundleError(.unknownNode, "hint/guided layer '\(n)' is not a graph node")
            }
            if let n = h.regressor.first(where: { !names.contains($0) }) {
                throw BundleError(.missingTensor, "regressor tensor '\(n)' is not in the tensor table")
            }
        }
        for t in c.tensors {
            guard let q = t.quant else { continue }
            guard let params = c.quantization?.params, q < params.count else {
                throw BundleError(.invalidQuantization, "tensor '\(t.name)' refers to missing QNTP entry \(q)")
            }
            try Quantization.check(
                params[q], for: TensorInfo(name: t.name, dtype: t.dtype, shape: t.shape, offset: 0, length: 0, crc32: 0),
                offset: nil)
        }
        for (i, t) in c.tensors.enumerated() {
            let info = TensorInfo(name: t.name, dtype: t.dtype, shape: t.shape, offset: 0, length: t.bytes.count, crc32: 0)
            try t.bytes.withUnsafeBytes { try TensorConversion.checkValues(info, $0, offset: i) }
        }
    }

    // MARK: Files

    static func splitPath(_ path: String) -> (dir: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        try AtomicOutput.writeAll(fd, bytes, path: path)
    }

    /// Temporaries left by writers that died (zombies included); ours has been renamed away by now.
    static func removeStaleTemporaries(dir: String, base: String) { AtomicOutput.removeStaleTemporaries(dir: dir, base: base) }

    static func fileSize(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw BundleError(.io, path: path, "cannot stat: \(errnoString())") }
        return Int(st.st_size)
    }
}

func errnoString() -> String { String(cString: strerror(errno)) }
