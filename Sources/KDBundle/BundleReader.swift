import KDIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The bytes of an open bundle: a read-only memory map, or a heap copy for `--no-mmap`.
final class Storage: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    let isMapped: Bool
    private let unmap: () -> Void

    init(bytes: UnsafeRawBufferPointer, isMapped: Bool = false, unmap: @escaping () -> Void) {
        self.bytes = bytes
        self.isMapped = isMapped
        self.unmap = unmap
    }

    deinit { unmap() }

    static func open(path: String, mmap useMmap: Bool) throws -> Storage {
        // O_NONBLOCK + fstat first: a FIFO or device named like a bundle is refused, not waited on.
        let fd: Int32
        do {
            fd = try SafeFile.openForReading(path)
        } catch let e as InputError {
            throw BundleError(.io, path: path, "cannot open: \(e.message)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BundleError(.io, path: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw BundleError(.io, path: path, "not a regular file") }
        let size = Int(st.st_size)
        if size == 0 { return Storage(bytes: UnsafeRawBufferPointer(start: nil, count: 0), unmap: {}) }
        if useMmap {
            guard let p = Glibc.mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
                throw BundleError(.io, path: path, "cannot map: \(String(cString: strerror(errno)))")
            }
            return Storage(bytes: UnsafeRawBufferPointer(start: p, count: size), isMapped: true) { munmap(p, size) }
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        var done = 0
        while done < size {
            let n = pread(fd, p + done, size - done, off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                p.deallocate()
                throw BundleError(.io, path: path, "read failed after \(done) of \(size) bytes")
            }
            done += n
        }
        return Storage(bytes: UnsafeRawBufferPointer(start: p, count: size)) { p.deallocate() }
    }

    static func copy(_ data: [UInt8]) -> Storage {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(data.count, 1), alignment: 4096)
        data.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: $0.count) } }
        return Storage(bytes: UnsafeRawBufferPointer(start: p, count: data.count)) { p.deallocate() }
    }
}

/// An open `.kdb` bundle. Opening checks structure only and is O(sections + tensors); sections are
/// decoded on demand and `verify()` checks every byte (Spec §9).
///
///     let bundle = try ModelBundle(path: "model.kdb")
///     let weights = try bundle.tensorData(named: "fc1.weight")   // zero-copy view
public final class ModelBundle: @unchecked Sendable {
    public let path: String
    public let header: Header
    public let sections: [SectionEntry]
    public let tensors: [TensorInfo]
    private let storage: Storage
    private let tensorIndex: [String: Int]

    /// Opens a file, memory-mapped unless `mmap` is false.
    public convenience init(path: String, mmap: Bool = true) throws {
        let storage = try Storage.open(path: path, mmap: mmap)
        try self.init(storage: storage, path: path)
    }

    /// Opens a bundle held in memory (tests, fuzzing).
    public convenience init(bytes: [UInt8], name: String = "<memory>") throws {
        try self.init(storage: Storage.copy(bytes), path: name)
    }

    private init(storage: Storage, path: String) throws {
        self.storage = storage
        self.path = path
        do {
            let header = try ModelBundle.readHeader(storage.bytes)
            let sections = try ModelBundle.readDirectory(storage.bytes, header)
            let tensors = try ModelBundle.readTensorTable(storage.bytes, header, sections)
            self.header = header
            self.sections = sections
            self.tensors = tensors
            var index: [String: Int] = [:]
            for (i, t) in tensors.enumerated() { index[t.name] = i }
            self.tensorIndex = index
        } catch let e as BundleError {
            throw e.at(path: path)
        }
    }

    public var fileSize: Int { storage.bytes.count }

    /// Asks the kernel to map every data page in one call (MADV_POPULATE_READ) before a full read,
    /// instead of taking one page fault per 4 KiB; a no-op for in-memory bundles or old kernels.
    public func prefault() {
        guard storage.isMapped, header.dataLength > 0, let base = storage.bytes.baseAddress else { return }
        let madvPopulateRead: Int32 = 22
        _ = madvise(UnsafeMutableRawPointer(mutating: base + header.dataOffset), header.dataLength, madvPopulateRead)
    }

    /// The SHA-256 stored in the trailer (what `verify()` checks), as hex.
    public var fileDigest: String {
        UnsafeRawBufferPointer(rebasing: storage.bytes[(storage.bytes.count - Format.trailerSize)...]).hexString
    }

    // MARK: Header, directory, tensor table

    static func readHeader(_ b: UnsafeRawBufferPointer) throws -> Header {
        guard b.count >= Format.headerSize else {
            throw BundleError(.truncated, offset: b.count, "file has \(b.count) bytes, fewer than the 128-byte header")
        }
        guard Array(b[0..<8]) == Format.magic else {
            throw BundleError(.badMagic, offset: 0, "expected \\x89KDB\\r\\n\\x1A\\n, found \(Array(b[0..<8]).hexString)")
        }
        let stored = b.loadLE(UInt32.self, at: 124)
        let computed = crc32(UnsafeRawBufferPointer(rebasing: b[0..<124]))
        guard stored == computed else {
            throw BundleError(
                .headerChecksum, offset: 124,
                "header CRC-32 is 0x\(String(stored, radix: 16)) but bytes 0–123 give 0x\(String(computed, radix: 16))")
        }
        let major = b.loadLE(UInt16.self, at: 8)
        let minor = b.loadLE(UInt16.self, at: 10)
        guard major == Format.major else {
            throw BundleError(
                .unsupportedVersion, offset: 8,
                "file is format \(major).\(minor); this reader reads \(Format.major).x (up to \(Format.major).\(Format.minor) features)"
            )
        }
        let required = b.loadLE(UInt64.self, at: 16)
        guard required & ~Format.knownRequiredFeatures == 0 else {
            throw BundleError(
                .unknownRequiredFeature, offset: 16,
                "required feature bits 0x\(String(required & ~Format.knownRequiredFeatures, radix: 16)) are unknown to format \(Format.major).\(Format.minor)"
            )
        }
        func invalid(_ at: Int, _ m: String) -> BundleError { BundleError(.invalidHeader, offset: at, m) }
        guard b.loadLE(UInt32.self, at: 12) == UInt32(Format.headerSize) else {
            throw invalid(12, "header_size is \(b.loadLE(UInt32.self, at: 12)), expected 128")
        }
        guard b.loadLE(UInt64.self, at: 40) == UInt64(Format.dataOffset) else {
            throw invalid(40, "data_offset is \(b.loadLE(UInt64.self, at: 40)), expected 4096")
        }
        let count = b.loadLE(UInt32.self, at: 64)
        guard (1...UInt32(Format.maxSections)).contains(count) else {
            throw invalid(64, "section_count \(count) is outside 1…\(Format.maxSections)")
        }
        guard b.loadLE(UInt32.self, at: 68) == UInt32(Format.directoryEntrySize) else {
            throw invalid(68, "directory_entry_size is \(b.loadLE(UInt32.self, at: 68)), expected 48")
        }
        if let nz = (72..<124).first(where: { b[$0] != 0 }) { throw invalid(nz, "reserved header byte is not zero") }
        // Compared as u64 first: a file_length of 2^63 or more is simply more than the file holds (truncated).
        let declared = b.loadLE(UInt64.self, at: 32)
        if UInt64(b.count) < declared {
            throw BundleError(.truncated, offset: b.count, "file has \(b.count) bytes but its header declares \(declared)")
        }
        let fileLength = try Checked.int(declared, "file_length", offset: 32)
        if b.count > fileLength {
            throw BundleError(
                .trailingBytes, offset: fileLength, "\(b.count - fileLength) bytes follow the declared end of the file")
        }
        let header = Header(
            major: major, minor: minor, requiredFeatures: required, optionalFeatures: b.loadLE(UInt64.self, at: 24),
            fileLength: fileLength, dataOffset: Format.dataOffset,
            dataLength: try Checked.int(b.loadLE(UInt64.self, at: 48), "data_length", offset: 48),
            directoryOffset: try Checked.int(b.loadLE(UInt64.self, at: 56), "directory_offset", offset: 56),
            sectionCount: Int(count))
        guard header.dataLength % Format.tensorAlignment == 0 else {
            throw invalid(48, "data_length \(header.dataLength) is not a multiple of 64")
        }
        let dataEnd = try Checked.add(header.dataOffset, header.dataLength, "data region end", offset: 48)
        let dirSize = try Checked.mul(header.sectionCount, Format.directoryEntrySize, "directory size", offset: 64)
        let dirEnd = try Checked.add(header.directoryOffset, dirSize, "directory end", offset: 56)
        let end = try Checked.add(dirEnd, Format.trailerSize, "trailer end", offset: 56)
        guard dataEnd <= fileLength, end <= fileLength else {
            throw BundleError(
                .outOfBounds, offset: dataEnd > fileLength ? 48 : 56,
                "data region ends at \(dataEnd) and directory + trailer at \(end), past the file's \(fileLength) bytes")
        }
        guard header.directoryOffset >= dataEnd else {
            throw BundleError(
                .overlappingRegions, offset: 56,
                "directory at \(header.directoryOffset) overlaps the data region ending at \(dataEnd)")
        }
        guard end == fileLength else {
            throw BundleError(
                .layoutGap, offset: end, "\(fileLength - end) bytes between the directory and the trailer belong to no region")
        }
        return header
    }

    static func readDirectory(_ b: UnsafeRawBufferPointer, _ h: Header) throws -> [SectionEntry] {
        var entries: [SectionEntry] = []
        var seen = Set<String>()
        var expected = h.dataOffset + h.dataLength
        for i in 0..<h.sectionCount {
            let at = h.directoryOffset + i * Format.directoryEntrySize
            let fourccBytes = Array(b[at..<(at + 4)])
            guard fourccBytes.allSatisfy({ (65...90).contains($0) || (48...57).contains($0) }) else {
                throw BundleError(.invalidField, offset: at, "section fourcc \(fourccBytes.hexString) is not 4 of A–Z 0–9")
            }
            let fourcc = String(decoding: fourccBytes, as: UTF8.self)
            let flags = b.loadLE(UInt32.self, at: at + 4)
            guard flags & ~(Format.flagCritical | Format.flagDeflated) == 0 else {
                throw BundleError(
                    .invalidSectionFlags, offset: at + 4, "section \(fourcc) has unknown flag bits 0x\(String(flags, radix: 16))")
            }
            if let nz = ((at + 36)..<(at + 48)).first(where: { b[$0] != 0 }) {
                throw BundleError(.invalidHeader, offset: nz, "reserved bytes of directory entry \(fourcc) are not zero")
            }
            guard seen.insert(fourcc).inserted else {
                throw BundleError(.duplicateName, offset: at, "section \(fourcc) appears twice in the directory")
            }
            let critical = flags & Format.flagCritical != 0
            if critical && !Format.knownFourccs.contains(fourcc) {
                throw BundleError(
                    .unknownCriticalSection, offset: at,
                    "section \(fourcc) is marked critical but format \(Format.major).\(Format.minor) does not define it")
            }
            let entry = SectionEntry(
                fourcc: fourcc, critical: critical, deflated: flags & Format.flagDeflated != 0,
                offset: try Checked.int(b.loadLE(UInt64.self, at: at + 8), "\(fourcc) offset", offset: at + 8),
                storedLength: try Checked.int(b.loadLE(UInt64.self, at: at + 16), "\(fourcc) stored_length", offset: at + 16),
                length: try Checked.int(b.loadLE(UInt64.self, at: at + 24), "\(fourcc) length", offset: at + 24),
                crc32: b.loadLE(UInt32.self, at: at + 32), entryOffset: at)
            let end = try Checked.add(entry.offset, entry.storedLength, "\(fourcc) end", offset: at + 8)
            if entry.offset < expected {
                throw BundleError(
                    .overlappingRegions, offset: at + 8,
                    "section \(fourcc) starts at \(entry.offset), inside the region ending at \(expected)")
            }
            if entry.offset > expected {
                throw BundleError(
                    .layoutGap, offset: at + 8,
                    "section \(fourcc) starts at \(entry.offset), leaving \(entry.offset - expected) bytes after \(expected) in no region")
            }
            if end > h.fileLength {
                throw BundleError(.outOfBounds, offset: at + 16, "section \(fourcc) ends at \(end), past the end of the file")
            }
            if end > h.directoryOffset {
                throw BundleError(
                    .overlappingRegions, offset: at + 16,
                    "section \(fourcc) ends at \(end), inside the directory at \(h.directoryOffset)")
            }
            if !entry.deflated && entry.length != entry.storedLength {
                throw BundleError(
                    .invalidField, offset: at + 24,
                    "section \(fourcc) is not deflated but declares length \(entry.length) ≠ stored \(entry.storedLength)")
            }
            if entry.deflated && entry.length > Format.maxInflatedSize {
                throw BundleError(
                    .inflatedSizeCap, offset: at + 24,
                    "section \(fourcc) declares \(entry.length) inflated bytes, above the cap of \(Format.maxInflatedSize)")
            }
            expected = end
            entries.append(entry)
        }
        if expected != h.directoryOffset {
            throw BundleError(
                .layoutGap, offset: expected,
                "\(h.directoryOffset - expected) bytes between the last section and the directory belong to no region")
        }
        guard seen.contains("TDIR") else { throw BundleError(.missingSection, "the tensor table section TDIR is missing") }
        return entries
    }

    /// The stored bytes' CRC-32 against the directory (E20), without inflating anything.
    static func checkCRC(_ b: UnsafeRawBufferPointer, _ e: SectionEntry) throws {
        let crc = crc32(UnsafeRawBufferPointer(rebasing: b[e.offset..<(e.offset + e.storedLength)]))
        guard crc == e.crc32 else {
            throw BundleError(
                .sectionChecksum, offset: e.offset,
                "section \(e.fourcc) CRC-32 is 0x\(String(crc, radix: 16)), directory says 0x\(String(e.crc32, radix: 16))")
        }
    }

    /// Whether a section's stored bytes match their CRC (inspect's section table).
    public func crcMatches(_ e: SectionEntry) -> Bool { (try? ModelBundle.checkCRC(storage.bytes, e)) != nil }

    /// SHA-256 of every byte before the trailer, recomputed (`fileDigest` is the stored trailer).
    public func computedFileDigest() -> String {
        SHA256.hex(UnsafeRawBufferPointer(rebasing: storage.bytes[0..<(storage.bytes.count - Format.trailerSize)]))
    }

    static func payload(_ b: UnsafeRawBufferPointer, _ e: SectionEntry) throws -> [UInt8] {
        let stored = UnsafeRawBufferPointer(rebasing: b[e.offset..<(e.offset + e.storedLength)])
        try checkCRC(b, e)
        if e.deflated { return try Deflate.inflate(stored, expected: e.length, context: "section \(e.fourcc)", offset: e.offset) }
        return Array(stored)
    }

    static func readTensorTable(_ b: UnsafeRawBufferPointer, _ h: Header, _ sections: [SectionEntry]) throws
        -> [TensorInfo]
    {
        let entry = sections.first { $0.fourcc == "TDIR" }!
        let bytes = try payload(b, entry)
        let map = try bytes.withUnsafeBytes { try Value.decodeSection($0, base: entry.offset, fourcc: "TDIR") }
        var f = Fields(map, context: "TDIR", offset: entry.offset)
        var names = Set<String>()
        var end = 0
        let tensors = try f.records("tensors") { r -> TensorInfo in
            let crc = try r.uint("crc32", max: UInt64(UInt32.max))
            let code = try r.uint("dtype", max: 255)
            let length = try r.uint("length")
            let name = try r.string("name")
            let offset = try r.uint("offset")
            let quant = r.has("quant") ? try r.uint("quant") : nil
            let shape = try r.ints("shape")
            let at = entry.offset
            guard !name.isEmpty else { throw r.invalid("name", "tensor names must not be empty") }
            guard names.insert(name).inserted else {
                throw BundleError(.duplicateName, offset: at, "tensor '\(name)' appears twice in TDIR")
            }
            guard let dtype = DType(rawValue: UInt8(code)) else {
                throw BundleError(.unknownDType, offset: at, "tensor '\(name)' has dtype code \(code), not one of 1…8")
            }
            guard shape.count <= Format.maxRank else {
                throw BundleError(.rankTooLarge, offset: at, "tensor '\(name)' has rank \(shape.count), above 8")
            }
            if let bad = shape.first(where: { $0 < 0 }) {
                throw r.invalid("shape", "tensor '\(name)' has negative dimension \(bad)")
            }
            var bytesNeeded = dtype.size
            for d in shape { bytesNeeded = try Checked.mul(bytesNeeded, Int(d), "size of tensor '\(name)'", offset: at) }
            guard bytesNeeded == length else {
                throw BundleError(
                    .shapeLengthMismatch, offset: at,
                    "tensor '\(name)' \(dtype)\(shape) needs \(bytesNeeded) bytes but declares \(length)")
            }
            guard offset % Format.tensorAlignment == 0 else {
                throw BundleError(.misalignedTensor, offset: at, "tensor '\(name)' offset \(offset) is not a multiple of 64")
            }
            let aligned = align(end, Format.tensorAlignment)
            if offset < end {
                throw BundleError(
                    .overlappingRegions, offset: at, "tensor '\(name)' at \(offset) overlaps the previous tensor ending at \(end)")
            }
            if offset > aligned {
                throw BundleError(
                    .layoutGap, offset: at, "tensor '\(name)' at \(offset) leaves a gap after the previous tensor (expected \(aligned))")
            }
            let tEnd = try Checked.add(offset, length, "end of tensor '\(name)'", offset: at)
            guard tEnd <= h.dataLength else {
                throw BundleError(
                    .outOfBounds, offset: at, "tensor '\(name)' ends at \(tEnd), past the data region of \(h.dataLength) bytes")
            }
            end = tEnd
            return TensorInfo(
                name: name, dtype: dtype, shape: shape.map { Int($0) }, offset: offset, length: length, crc32: UInt32(crc),
                quant: quant)
        }
        try f.finish()
        let expectedLength = align(end, Format.tensorAlignment)
        guard h.dataLength == expectedLength else {
            throw BundleError(
                .layoutGap, offset: 48,
                "data_length is \(h.dataLength) but the tensors end at \(end) (expected \(expectedLength))")
        }
        let quantized = tensors.contains { $0.quant != nil }
        guard quantized == (h.requiredFeatures & Format.requiredQuantized != 0) else {
            throw BundleError(
                .invalidHeader, offset: 16,
                quantized
                    ? "tensors carry quantization descriptors but required feature bit 0 (QUANTIZED) is not set"
                    : "required feature bit 0 (QUANTIZED) is set but no tensor is quantized")
        }
        return tensors
    }

    // MARK: Tensors

    public func tensorInfo(named name: String) -> TensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// A zero-copy view of a tensor's bytes, valid while the bundle is alive.
    public func tensorData(named name: String) throws -> UnsafeRawBufferPointer {
        guard let i = tensorIndex[name] else {
            throw BundleError(.missingTensor, path: path, "no tensor named '\(name)'")
        }
        return tensorData(at: i)
    }

    public func tensorData(at index: Int) -> UnsafeRawBufferPointer {
        let t = tensors[index]
        let start = header.dataOffset + t.offset
        return UnsafeRawBufferPointer(rebasing: storage.bytes[start..<(start + t.length)])
    }

    /// A tensor's values as Float, dequantizing int8/uint8/int32 with its `QNTP` parameters and
    /// widening f16/bf16.
    public func floats(named name: String) throws -> [Float] {
        guard let i = tensorIndex[name] else {
            throw BundleError(.missingTensor, path: path, "no tensor named '\(name)'")
        }
        let t = tensors[i]
        let params = try t.quant.map { q -> Quantization.Params in
            guard let qs = try quantization(), q < qs.params.count else {
                throw BundleError(.invalidQuantization, path: path, "tensor '\(t.name)' refers to missing QNTP entry \(q)")
            }
            return qs.params[q]
        }
        return try TensorConversion.floats(t, tensorData(at: i), params: params)
    }

    // MARK: Sections

    public func entry(_ fourcc: String) -> SectionEntry? { sections.first { $0.fourcc == fourcc } }

    /// The inflated payload of a section, CRC-checked; nil when absent.
    public func payload(of fourcc: String) throws -> [UInt8]? {
        guard let e = entry(fourcc) else { return nil }
        do { return try ModelBundle.payload(storage.bytes, e) } catch let err as BundleError { throw err.at(path: path) }
    }

    /// The stored (possibly deflated) bytes of a section, for rewriting unknown sections verbatim.
    func storedBytes(of e: SectionEntry) -> [UInt8] { Array(storage.bytes[e.offset..<(e.offset + e.storedLength)]) }

    /// Decodes one typed section without cross-checks.
    func decode<T: BundleSection>(_ type: T.Type) throws -> T? {
        guard let bytes = try payload(of: T.fourcc) else { return nil }
        let offset = entry(T.fourcc)?.offset ?? 0  // present: payload(of:) found it
        do {
            let map = try bytes.withUnsafeBytes { try Value.decodeSection($0, base: offset, fourcc: T.fourcc) }
            return try T(decoding: map, offset: offset)
        } catch let e as BundleError {
            throw e.at(path: path)
        }
    }

    public func graph() throws -> Graph? {
        guard let g = try decode(Graph.self) else { return nil }
        let offset = entry("GRPH")?.offset
        try wrap {
            try g.validate(tensorNames: Set(tensors.map(\.name)), offset: offset)
            // Shape inference proves that every size fits before any command runs the graph.
            do {
                _ = try g.stats(tensorShapes: Dictionary(tensors.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a }), batch: 1)
            } catch let e as Graph.ShapeError {
                throw BundleError(.invalidGraph, offset: offset, "GRPH: the graph cannot run: \(e)")
            }
        }
        return g
    }

    public func labels() throws -> Labels? { try decode(Labels.self) }
    public func preprocessing() throws -> Preprocessing? { try decode(Preprocessing.self) }
    public func provenance() throws -> Provenance? { try decode(Provenance.self) }
    public func metadata() throws -> Metadata? { try decode(Metadata.self) }

    public func verticalMap() throws -> VerticalMap? {
        guard let v = try decode(VerticalMap.self) else { return nil }
        guard let classCount = try labels()?.classes.count else {
            throw BundleError(
                .classIndexOutOfRange, path: path, offset: entry("VMAP")?.offset, "VMAP needs a LABL section for its class indices")
        }
        try wrap { try v.check(classCount: classCount, offset: entry("VMAP")?.offset) }
        return v
    }

    public func fspPairs() throws -> FSPPairs? {
        guard let p = try decode(FSPPairs.self) else { return nil }
        let nodes = Set(try graph()?.nodes.map(\.name) ?? [])
        for pair in p.pairs {
            for name in [pair.first, pair.second] where !nodes.contains(name) {
                throw BundleError(
                    .unknownNode, path: path, offset: entry("FSPP")?.offset,
                    "FSP pair \(pair.first):\(pair.second) names '\(name)', which is not a node of the graph")
            }
        }
        return p
    }

    public func hints() throws -> Hints? {
        guard let h = try decode(Hints.self) else { return nil }
        let nodes = Set(try graph()?.nodes.map(\.name) ?? [])
        for name in h.hints + h.guided where !nodes.contains(name) {
            throw BundleError(
                .unknownNode, path: path, offset: entry("HINT")?.offset,
                "hint/guided layer '\(name)' is not a node of the graph")
        }
        for name in h.regressor where tensorIndex[name] == nil {
            throw BundleError(
                .missingTensor, path: path, offset: entry("HINT")?.offset, "regressor tensor '\(name)' is not in TDIR")
        }
        return h
    }

    public func quantization() throws -> Quantization? {
        let q = try decode(Quantization.self)
        let offset = entry("QNTP")?.offset
        // Every entry is checked, referenced or not; the tensor-specific rules follow for referenced ones.
        for (i, p) in (q?.params ?? []).enumerated() {
            let count = p.axis == -1 ? 1 : p.scale.count
            guard p.axis >= -1, count >= 1, p.scale.count == count, p.zeroPoint.count == count,
                p.scale.allSatisfy({ $0 > 0 && $0.isFinite })
            else {
                throw BundleError(
                    .invalidQuantization, path: path, offset: offset,
                    "QNTP.params[\(i)]: axis \(p.axis) with \(p.scale.count) scales and \(p.zeroPoint.count) zero points (scales finite and > 0)"
                )
            }
        }
        for t in tensors {
            guard let i = t.quant else { continue }
            guard let q, i < q.params.count else {
                throw BundleError(
                    .invalidQuantization, path: path, offset: offset,
                    "tensor '\(t.name)' refers to QNTP entry \(i), which does not exist")
            }
            try wrap { try Quantization.check(q.params[i], for: t, offset: offset) }
        }
        return q
    }

    private func wrap(_ body: () throws -> Void) throws {
        do { try body() } catch let e as BundleError { throw e.at(path: path) }
    }

    /// Decodes every known section with its cross-checks.
    public func validate() throws {
        _ = try graph()
        _ = try labels()
        _ = try preprocessing()
        _ = try verticalMap()
        _ = try fspPairs()
        _ = try hints()
        _ = try quantization()
        _ = try provenance()
        _ = try metadata()
    }

    // MARK: Verify

    /// Content checks (Spec §9): section and tensor CRCs, padding, non-finite values, every known
    /// section decoded and cross-checked, and the SHA-256 trailer.
    public func verify() throws {
        let b = storage.bytes
        try wrap {
            if let nz = (Format.headerSize..<Format.dataOffset).first(where: { b[$0] != 0 }) {
                throw BundleError(.nonZeroPadding, offset: nz, "header padding byte is not zero")
            }
            // Known sections are inflated too; unknown non-critical ones only have their stored bytes' CRC checked.
            for e in sections {
                if Format.knownFourccs.contains(e.fourcc) { _ = try ModelBundle.payload(b, e) } else { try ModelBundle.checkCRC(b, e) }
            }
            for (i, t) in tensors.enumerated() {
                let data = tensorData(at: i)
                let crc = crc32(data)
                guard crc == t.crc32 else {
                    throw BundleError(
                        .tensorChecksum, offset: header.dataOffset + t.offset,
                        "tensor '\(t.name)' CRC-32 is 0x\(String(crc, radix: 16)), table says 0x\(String(t.crc32, radix: 16))")
                }
                try TensorConversion.checkValues(t, data, offset: header.dataOffset + t.offset)
                let padEnd = i + 1 < tensors.count ? tensors[i + 1].offset : header.dataLength
                let start = header.dataOffset + t.offset + t.length
                if let nz = (start..<(header.dataOffset + padEnd)).first(where: { b[$0] != 0 }) {
                    throw BundleError(.nonZeroPadding, offset: nz, "padding after tensor '\(t.name)' is not zero")
                }
            }
        }
        try validate()
        let body = UnsafeRawBufferPointer(rebasing: b[0..<(b.count - Format.trailerSize)])
        let computed = SHA256.hex(body)
        guard computed == fileDigest else {
            throw BundleError(
                .fileChecksum, path: path, offset: b.count - Format.trailerSize,
                "SHA-256 of the file is \(computed), trailer says \(fileDigest)")
        }
    }

    // MARK: Digest and rewriting

    /// The model's identity (Spec §8): graph, labels, preprocessing and tensors, not layout or PROV.
    public func contentDigest() throws -> String {
        let q = try quantization()
        var d = ContentDigest()
        for fourcc in ["GRPH", "LABL", "PREP"] { d.addSection(fourcc, try payload(of: fourcc)) }
        d.beginTensors(count: tensors.count)
        for (i, t) in tensors.enumerated() {
            d.addTensor(t, quant: t.quant.flatMap { q?.params[$0] }, bytes: tensorData(at: i))
        }
        return d.finish()
    }

    /// Everything needed to write the bundle again; unknown non-critical sections are kept verbatim.
    public func contents() throws -> BundleContents {
        try validate()
        var c = BundleContents()
        c.tensors = tensors.enumerated().map { i, t in
            BundleContents.Tensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: Array(tensorData(at: i)), quant: t.quant)
        }
        c.graph = try graph()
        c.labels = try labels()
        c.preprocessing = try preprocessing()
        c.verticals = try verticalMap()
        c.fspPairs = try fspPairs()
        c.hints = try hints()
        c.quantization = try quantization()
        c.provenance = try provenance()
        c.metadata = try metadata()
        c.deflate = Set(sections.filter { $0.deflated && Format.knownFourccs.contains($0.fourcc) }.map(\.fourcc))
        c.unknownSections = sections.filter { !Format.knownFourccs.contains($0.fourcc) }.map {
            BundleContents.RawSection(fourcc: $0.fourcc, deflated: $0.deflated, length: $0.length, stored: storedBytes(of: $0))
        }
        return c
    }
}
