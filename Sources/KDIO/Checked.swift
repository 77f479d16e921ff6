/// Sizes, counts, offsets and axes read from an input file are untrusted: every one passes
/// through `Checked` before it is used for arithmetic, indexing or an allocation. Each function
/// proves the value fits (no overflow, no negative size, within the bytes present, within a cap)
/// or throws an `InputError` naming the file and the field.
///
///     let c = Checked(path)
///     let n = try c.count(header.rows, "rows")                     // UInt64/Int64 → Int, ≥ 0
///     let elements = try c.product(shape, "shape", cap: Caps.current.tensorElements)
///     let bytes = try c.bytes(elements, each: 4, "tensor 'w'")     // elements × 4, overflow-checked
///     let r = try c.range(offset, bytes, within: file.count, "tensor 'w'")
public struct Checked: Sendable {
    public let path: String

    public init(_ path: String) { self.path = path }

    /// An error naming this file.
    public func fail(_ message: String) -> InputError { InputError(path, message) }

    /// A count or size from the file as Int: non-negative and at most `cap`.
    public func count<T: BinaryInteger>(_ v: T, _ what: @autoclosure () -> String, cap: Int = Int.max) throws -> Int {
        guard v >= 0, let i = Int(exactly: v) else { throw fail("\(what()) of \(v) is not a valid size") }
        guard i <= cap else { throw fail("\(what()) of \(i) exceeds the limit of \(cap)") }
        return i
    }

    /// The product of untrusted dimensions: each ≥ 0, the product without overflow and ≤ `cap`.
    public func product<T: BinaryInteger>(_ dims: [T], _ what: @autoclosure () -> String, cap: Int = Int.max) throws -> Int {
        var n = 1
        for d in dims {
            guard d >= 0, let i = Int(exactly: d) else { throw fail("\(what()) \(Self.list(dims)) has a negative or huge dimension") }
            let (m, o) = n.multipliedReportingOverflow(by: i)
            guard !o else { throw fail("\(what()) \(Self.list(dims)) overflows (more than \(Int.max) elements)") }
            n = m
        }
        // A zero dimension makes the product 0 whatever the others are, but they must still be sane.
        guard n <= cap else { throw fail("\(what()) \(Self.list(dims)) has \(n) elements, above the limit of \(cap)") }
        return n
    }

    static func list<T: BinaryInteger>(_ xs: [T]) -> String {
        "[" + xs.prefix(16).map { "\($0)" }.joined(separator: ", ") + (xs.count > 16 ? ", …]" : "]")
    }

    /// `count × each` bytes, overflow-checked and at most `cap`.
    public func bytes(_ count: Int, each: Int, _ what: @autoclosure () -> String, cap: Int = Int.max) throws -> Int {
        guard count >= 0, each >= 0 else { throw fail("\(what()): negative size") }
        let (m, o) = count.multipliedReportingOverflow(by: each)
        guard !o, m <= cap else { throw fail("\(what()): \(count) × \(each) bytes exceeds the limit of \(cap)") }
        return m
    }

    /// The element count (≤ `Caps.current.tensorElements`) and byte size of an array of `shape`
    /// with `each` bytes an element.
    public func array<T: BinaryInteger>(_ shape: [T], each: Int, _ what: @autoclosure () -> String) throws -> (count: Int, bytes: Int) {
        let count = try product(shape, what(), cap: Caps.current.tensorElements)
        return (count, try bytes(count, each: each, what()))
    }

    /// `a + b` for untrusted sizes or offsets, overflow-checked.
    public func sum(_ a: Int, _ b: Int, _ what: @autoclosure () -> String) throws -> Int {
        let (s, o) = a.addingReportingOverflow(b)
        guard !o, a >= 0, b >= 0 else { throw fail("\(what()): \(a) + \(b) is not a valid size") }
        return s
    }

    /// `offset ..< offset + length` after proving it lies inside `0 ..< total`.
    public func range<T: BinaryInteger, U: BinaryInteger>(_ offset: T, _ length: U, within total: Int, _ what: @autoclosure () -> String)
        throws -> Range<Int>
    {
        guard offset >= 0, length >= 0, let o = Int(exactly: offset), let l = Int(exactly: length), o <= total, l <= total - o else {
            throw fail("truncated or out of bounds: \(what()) needs bytes at \(offset) of length \(length), the data has \(total)")
        }
        return o..<(o + l)
    }

    /// An axis in `-rank ..< rank`, normalised to `0 ..< rank`.
    public func axis<T: BinaryInteger>(_ a: T, rank: Int, _ what: @autoclosure () -> String) throws -> Int {
        guard let i = Int(exactly: a), i >= -rank, i < rank else { throw fail("\(what()): axis \(a) is out of range for rank \(rank)") }
        return i < 0 ? i + rank : i
    }

    /// A dimension or size for Int32-based C APIs and shapes: 0 … `cap` (default Int32.max).
    public func dimension<T: BinaryInteger>(_ v: T, _ what: @autoclosure () -> String, cap: Int = Int(Int32.max)) throws -> Int {
        try count(v, what(), cap: cap)
    }
}

/// A problem with an input file (its content, its size or its type): the message names the file.
/// kdtool reports it with exit code 2.
public struct InputError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { path.isEmpty ? message : "\(PathCoding.display(path)): \(message)" }
}

/// The documented caps on what an input file may ask for (docs/security.md). Every one is checked
/// before the memory is allocated. They are set once, before any work starts (the fuzz targets
/// lower them); the pixel cap is `--max-pixels` on `infer`.
public struct Caps: Sendable {
    /// Bytes of one input file read whole: ONNX models, state dicts, .npy, configs (4 GiB).
    public var fileBytes = 4 << 30
    /// Elements of one tensor or array from a file (2^31: an 8 GiB float32 tensor).
    public var tensorElements = 1 << 31
    /// Elements of all constants an ONNX import folds (2^28 floats, 1 GiB).
    public var foldedElements = 1 << 28
    /// Pixels of one image, checked from its header before decoding.
    public var imagePixels = 100_000_000
    /// Bytes a compressed member (npz, CIFAR tar, gzip IDX/CSV) may expand to (2 GiB).
    public var expandedBytes = 2 << 30
    /// Bytes of a YAML config file, and the nodes its parse may expand to (aliases counted each time).
    public var configBytes = 1 << 20
    public var configNodes = 100_000
    /// Runs one `--config` sweep may expand to.
    public var sweepRuns = 10_000
    /// Values of a graph's largest activation for one image (2^26: 256 MB of floats), so shape
    /// inference can prove that a bundle's graph fits before anything runs.
    public var activationElements = 1 << 26
    /// Bytes of the largest activation of a whole batch (2 GiB): a forward pass that would need
    /// more is refused with the batch size that fits.
    public var batchBytes = 2 << 30

    public init() {}

    /// The caps in force. Set from command-line options before any work starts, then only read.
    nonisolated(unsafe) public static var current = Caps()
}
