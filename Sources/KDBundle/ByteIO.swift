/// Little-endian reads from a bounded byte buffer. Every read checks the bytes left first, so a
/// hostile length can never read past the buffer or size an allocation.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    private(set) var position: Int
    /// Absolute file offset of `bytes[0]`, for error messages.
    let base: Int

    init(_ bytes: UnsafeRawBufferPointer, base: Int = 0) {
        self.bytes = bytes
        self.position = 0
        self.base = base
    }

    var remaining: Int { bytes.count - position }
    var fileOffset: Int { base + position }

    mutating func need(_ count: Int, _ what: @autoclosure () -> String) throws {
        guard count >= 0, count <= remaining else {
            throw BundleError(
                .malformedSection, offset: fileOffset,
                "\(what()) needs \(count) bytes but only \(remaining) are left")
        }
    }

    mutating func u8(_ what: @autoclosure () -> String) throws -> UInt8 {
        try need(1, what())
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16(_ what: @autoclosure () -> String) throws -> UInt16 {
        try need(2, what())
        defer { position += 2 }
        return bytes.loadLE(UInt16.self, at: position)
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 {
        try need(4, what())
        defer { position += 4 }
        return bytes.loadLE(UInt32.self, at: position)
    }

    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 {
        try need(8, what())
        defer { position += 8 }
        return bytes.loadLE(UInt64.self, at: position)
    }

    mutating func slice(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        try need(count, what())
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }
}

extension UnsafeRawBufferPointer {
    @inlinable
    func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// Appends little-endian values to a growing byte array.
struct ByteSink {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { append(v) }
    mutating func u32(_ v: UInt32) { append(v) }
    mutating func u64(_ v: UInt64) { append(v) }
    mutating func i64(_ v: Int64) { append(v) }
    mutating func raw<S: Sequence>(_ s: S) where S.Element == UInt8 { bytes.append(contentsOf: s) }
    mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }

    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Overflow-checked size arithmetic (Spec §1): every failure is `arithmetic-overflow`.
enum Checked {
    static func add(_ a: Int, _ b: Int, _ what: @autoclosure () -> String, offset: Int? = nil) throws -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        if o { throw BundleError(.arithmeticOverflow, offset: offset, "\(what()) overflows (\(a) + \(b))") }
        return r
    }

    static func mul(_ a: Int, _ b: Int, _ what: @autoclosure () -> String, offset: Int? = nil) throws -> Int {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        if o { throw BundleError(.arithmeticOverflow, offset: offset, "\(what()) overflows (\(a) × \(b))") }
        return r
    }

    /// A u64 field as Int; values above Int64.max cannot describe anything in a real file.
    static func int(_ v: UInt64, _ what: @autoclosure () -> String, offset: Int? = nil) throws -> Int {
        guard v <= UInt64(Int.max) else {
            throw BundleError(.arithmeticOverflow, offset: offset, "\(what()) = \(v) does not fit in a signed 64-bit size")
        }
        return Int(v)
    }
}

@inlinable
func align(_ x: Int, _ a: Int) -> Int { (x + a - 1) / a * a }
