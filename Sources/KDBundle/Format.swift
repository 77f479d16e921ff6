/// Fixed numbers of format 1.0 (Spec §2–§5).
public enum Format {
    public static let magic: [UInt8] = [0x89, 0x4B, 0x44, 0x42, 0x0D, 0x0A, 0x1A, 0x0A]
    public static let major: UInt16 = 1
    /// 1.1: op set 2 in GRPH (written only by files whose graph needs it).
    public static let minor: UInt16 = 1
    public static let headerSize = 128
    public static let dataOffset = 4096
    public static let tensorAlignment = 64
    public static let directoryEntrySize = 48
    public static let trailerSize = 32
    public static let maxSections = 1024
    public static let maxInflatedSize = 256 << 20
    public static let maxRank = 8

    /// Required feature bit 0: some tensor carries a quantization descriptor.
    public static let requiredQuantized: UInt64 = 1
    public static let knownRequiredFeatures: UInt64 = requiredQuantized
    /// Optional feature bit 0: some section is deflated.
    public static let optionalDeflate: UInt64 = 1

    static let flagCritical: UInt32 = 1
    static let flagDeflated: UInt32 = 2

    /// Known sections in the order a writer emits them, with the flag it sets.
    public static let knownSections: [(fourcc: String, critical: Bool)] = [
        ("TDIR", true), ("GRPH", true), ("LABL", true), ("PREP", true), ("VMAP", false),
        ("FSPP", false), ("HINT", false), ("QNTP", true), ("PROV", false), ("META", false),
    ]
    static let knownFourccs = Set(knownSections.map(\.fourcc))
}

/// Element types of tensors (Spec §4.1).
public enum DType: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 1
    case f16, bf16, i8, u8, i32, i64, bool

    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .i8, .u8, .bool: 1
        case .i64: 8
        }
    }

    public var description: String {
        switch self {
        case .f32: "f32"
        case .f16: "f16"
        case .bf16: "bf16"
        case .i8: "i8"
        case .u8: "u8"
        case .i32: "i32"
        case .i64: "i64"
        case .bool: "bool"
        }
    }

    public init?(name: String) {
        guard let d = DType.allCases.first(where: { $0.description == name }) else { return nil }
        self = d
    }

    var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One row of the tensor table.
public struct TensorInfo: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Offset relative to the data region.
    public var offset: Int
    public var length: Int
    public var crc32: UInt32
    /// Index into the `QNTP` parameters, when quantized.
    public var quant: Int?

    public var elementCount: Int { shape.reduce(1, *) }
}

/// One directory entry (Spec §5).
public struct SectionEntry: Equatable, Sendable {
    public var fourcc: String
    public var critical: Bool
    public var deflated: Bool
    public var offset: Int
    public var storedLength: Int
    public var length: Int
    public var crc32: UInt32
    /// Position of the entry in the file, for error messages.
    public var entryOffset: Int
}

/// The parsed fixed header (Spec §3).
public struct Header: Equatable, Sendable {
    public var major: UInt16
    public var minor: UInt16
    public var requiredFeatures: UInt64
    public var optionalFeatures: UInt64
    public var fileLength: Int
    public var dataOffset: Int
    public var dataLength: Int
    public var directoryOffset: Int
    public var sectionCount: Int
}
