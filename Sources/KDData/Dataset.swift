import KDIO
import KDTensor

/// A problem with input data; the message names the file (and row or index). Always an invalid
/// input (exit 2).
public struct DataError: BodiedError {
    public enum Code: String, Sendable {
        /// The file or folder cannot be opened or read.
        case unreadable = "data.unreadable"
        /// Its content is not what its format says.
        case format = "data.format"
        /// It asks for more than a documented cap.
        case tooLarge = "data.too-large"
        /// It is not a data source kdtool knows, or holds nothing usable.
        case unsupported = "data.unsupported"
    }
    public var body: ErrorBody<Code>
    /// `message` names the file first ("PATH: what is wrong"), as every DataError has.
    public init(_ message: String, code: Code = .format) { body = ErrorBody(code, file: "", cause: message) }
    public var category: ErrorCategory { .invalidInput }
}

/// Labelled images held as raw 8-bit pixels [N, C, H, W] (small next to Float32, and what every
/// source decodes to); preprocessing turns them into network inputs per batch.
public struct Dataset: Sendable {
    public var pixels: [UInt8]
    public var count: Int
    public var channels: Int
    public var height: Int
    public var width: Int
    public var labels: [Int]
    public var classes: [String]
    /// The largest raw pixel value (255: every source is brought to the 0–255 range).
    public var maxValue: Double
    /// Where the data came from, for provenance.
    public var source: String
    /// Split of the source this is (train, eval, all, …).
    public var split: String

    public init(
        pixels: [UInt8], count: Int, channels: Int, height: Int, width: Int, labels: [Int], classes: [String], maxValue: Double = 255,
        source: String, split: String = "all"
    ) {
        self.pixels = pixels
        self.count = count
        self.channels = channels
        self.height = height
        self.width = width
        self.labels = labels
        self.classes = classes
        self.maxValue = maxValue
        self.source = source
        self.split = split
    }

    public var imageSize: Int { channels * height * width }
    public var shape: [Int] { [channels, height, width] }

    /// The examples at `indices`, in that order.
    public func subset(_ indices: [Int], split: String) -> Dataset {
        var px = [UInt8]()
        px.reserveCapacity(indices.count * imageSize)
        for i in indices { px.append(contentsOf: pixels[(i * imageSize)..<((i + 1) * imageSize)]) }
        return Dataset(
            pixels: px, count: indices.count, channels: channels, height: height, width: width, labels: indices.map { labels[$0] },
            classes: classes, maxValue: maxValue, source: source, split: split)
    }

    public func range(_ r: Range<Int>, split: String) -> Dataset { subset(Array(r), split: split) }

    /// A seeded split into (train, holdout) with `fraction` of the examples held out.
    public func holdout(fraction: Double, seed: UInt64) -> (train: Dataset, holdout: Dataset) {
        var rng = RandomSource(seed: seed, stream: 0x401d)
        let perm = rng.permutation(count)
        let k = Int((Double(count) * fraction).rounded())
        return (subset(perm[k...].sorted(), split: "train"), subset(perm[..<k].sorted(), split: "holdout"))
    }

    /// FNV-1a over labels and pixels: identifies the data in provenance and caches.
    public var digest: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for l in labels { h = (h ^ UInt64(l)) &* 0x100_0000_01b3 }
        for p in pixels { h = (h ^ UInt64(p)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }
}

extension Dataset {
    /// Only the examples of the named classes, relabelled 0..<names.count in that order
    /// (a specialist's or a vertical's data). Unknown names are an error naming the known ones.
    public func restricted(to names: [String]) throws -> Dataset {
        var index: [Int: Int] = [:]
        for (k, n) in names.enumerated() {
            guard let c = classes.firstIndex(of: n) else {
                throw DataError("\(source) has no class '\(n)' (classes: \(classes.prefix(20).joined(separator: ", ")))")
            }
            index[c] = k
        }
        let keep = (0..<count).filter { index[labels[$0]] != nil }
        guard !keep.isEmpty || count == 0 else {
            throw DataError("\(source): none of its \(count) images belongs to the classes \(names.prefix(20).joined(separator: ", "))")
        }
        var d = subset(keep, split: split)
        d.labels = keep.map { index[labels[$0]] ?? 0 }  // every kept label has an index (filtered above)
        d.classes = names
        return d
    }
}
