import KDIO

/// Every way a bundle can be rejected; each case has a stable code (Spec/bundle-format.md §12).
public enum BundleErrorCode: String, CaseIterable, Sendable {
    case badMagic = "E01"
    case truncated = "E02"
    case trailingBytes = "E03"
    case headerChecksum = "E04"
    case unsupportedVersion = "E05"
    case unknownRequiredFeature = "E06"
    case outOfBounds = "E07"
    case arithmeticOverflow = "E08"
    case misalignedTensor = "E09"
    case overlappingRegions = "E10"
    case layoutGap = "E11"
    case duplicateName = "E12"
    case unknownDType = "E13"
    case shapeLengthMismatch = "E14"
    case nonFinite = "E15"
    case missingTensor = "E16"
    case graphCycle = "E17"
    case unknownOp = "E18"
    case unknownCriticalSection = "E19"
    case sectionChecksum = "E20"
    case deflateBomb = "E21"
    case inflatedSizeCap = "E22"
    case invalidUTF8 = "E23"
    case classIndexOutOfRange = "E24"
    case unknownNode = "E25"
    case nonZeroPadding = "E26"
    case rankTooLarge = "E27"
    case fileChecksum = "E28"
    case tensorChecksum = "E29"
    case malformedSection = "E30"
    case missingField = "E31"
    case unexpectedField = "E32"
    case invalidField = "E33"
    case missingSection = "E34"
    case invalidGraph = "E35"
    case inflateFailed = "E36"
    case invalidHeader = "E37"
    case invalidQuantization = "E38"
    case io = "E39"
    case stringTooLong = "E40"
    case nestingTooDeep = "E41"
    case unsortedKeys = "E42"
    case invalidSectionFlags = "E43"

    /// The kebab-case name used in the spec and in fixture file names.
    public var name: String {
        switch self {
        case .badMagic: "bad-magic"
        case .truncated: "truncated"
        case .trailingBytes: "trailing-bytes"
        case .headerChecksum: "header-checksum"
        case .unsupportedVersion: "unsupported-version"
        case .unknownRequiredFeature: "unknown-required-feature"
        case .outOfBounds: "out-of-bounds"
        case .arithmeticOverflow: "arithmetic-overflow"
        case .misalignedTensor: "misaligned-tensor"
        case .overlappingRegions: "overlapping-regions"
        case .layoutGap: "layout-gap"
        case .duplicateName: "duplicate-name"
        case .unknownDType: "unknown-dtype"
        case .shapeLengthMismatch: "shape-length-mismatch"
        case .nonFinite: "non-finite"
        case .missingTensor: "missing-tensor"
        case .graphCycle: "graph-cycle"
        case .unknownOp: "unknown-op"
        case .unknownCriticalSection: "unknown-critical-section"
        case .sectionChecksum: "section-checksum"
        case .deflateBomb: "deflate-bomb"
        case .inflatedSizeCap: "inflated-size-cap"
        case .invalidUTF8: "invalid-utf8"
        case .classIndexOutOfRange: "class-index-out-of-range"
        case .unknownNode: "unknown-node"
        case .nonZeroPadding: "nonzero-padding"
        case .rankTooLarge: "rank-too-large"
        case .fileChecksum: "file-checksum"
        case .tensorChecksum: "tensor-checksum"
        case .malformedSection: "malformed-section"
        case .missingField: "missing-field"
        case .unexpectedField: "unexpected-field"
        case .invalidField: "invalid-field"
        case .missingSection: "missing-section"
        case .invalidGraph: "invalid-graph"
        case .inflateFailed: "inflate-failed"
        case .invalidHeader: "invalid-header"
        case .invalidQuantization: "invalid-quantization"
        case .io: "io"
        case .stringTooLong: "string-too-long"
        case .nestingTooDeep: "nesting-too-deep"
        case .unsortedKeys: "unsorted-keys"
        case .invalidSectionFlags: "invalid-section-flags"
        }
    }
}

/// A bundle could not be read or written. `description` names the file, the byte offset
/// (when there is one) and what was expected, e.g.
/// `model.kdb: KDB-E04 header-checksum at byte 124: stored CRC 0x1234 but computed 0x5678`.
public struct BundleError: Error, CustomStringConvertible, Sendable, Equatable {
    public var code: BundleErrorCode
    public var path: String
    public var offset: Int?
    public var message: String

    public init(_ code: BundleErrorCode, path: String = "", offset: Int? = nil, _ message: String) {
        self.code = code
        self.path = path
        self.offset = offset
        self.message = message
    }

    public var description: String {
        let location = offset.map { " at byte \($0)" } ?? ""
        let file = path.isEmpty ? "" : "\(path): "
        return "\(file)KDB-\(code.rawValue) \(code.name)\(location): \(message)"
    }

    /// The same error attributed to a file (errors raised deep in a parser do not know it).
    func at(path: String) -> BundleError {
        var copy = self
        if copy.path.isEmpty { copy.path = path }
        return copy
    }
}

extension BundleError: KDError {
    public var errorCode: String { "KDB-\(code.rawValue)" }
    public var category: ErrorCategory { .invalidInput }
    public var file: String { path }
    public var cause: String { message }
}
