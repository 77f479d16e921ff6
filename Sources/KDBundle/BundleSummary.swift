/// Everything a bundle says about itself, decoded and cross-checked once: the sections with
/// their CRC state, every typed section, the content digest, the feature names and the graph's
/// per-node shapes, parameters and FLOPs in file order. `kdtool inspect` renders it as text or
/// JSON; a library user gets the same facts without the CLI.
///
///     let s = try BundleSummary(try ModelBundle(path: "model.kdb"))
///     print(s.contentDigest, s.nodeStats.reduce(0) { $0 + $1.parameters })
public struct BundleSummary {
    public let bundle: ModelBundle
    /// Whether each section's stored bytes match their CRC (nothing is inflated to find out).
    public let sectionCRC: [String: Bool]
    public let graph: Graph?
    public let labels: Labels?
    public let preprocessing: Preprocessing?
    public let verticals: VerticalMap?
    public let fspPairs: FSPPairs?
    public let hints: Hints?
    public let quantization: Quantization?
    public let provenance: Provenance?
    public let metadata: Metadata?
    public let contentDigest: String
    /// Per node, in file order: output shape at batch 1, parameters, FLOPs (empty when shapes
    /// could not be inferred; `shapeError` says why).
    public let nodeStats: [Graph.NodeStats]
    public let shapeError: String?

    public init(_ b: ModelBundle) throws {
        bundle = b
        var crc: [String: Bool] = [:]
        for s in b.sections { crc[s.fourcc] = b.crcMatches(s) }
        sectionCRC = crc
        graph = try b.graph()
        labels = try b.labels()
        preprocessing = try b.preprocessing()
        verticals = try b.verticalMap()
        fspPairs = try b.fspPairs()
        hints = try b.hints()
        quantization = try b.quantization()
        provenance = try b.provenance()
        metadata = try b.metadata()
        contentDigest = try b.contentDigest()
        var stats: [Graph.NodeStats] = []
        var shapeError: String?
        if let graph {
            do {
                stats = try graph.stats(tensorShapes: Dictionary(uniqueKeysWithValues: b.tensors.map { ($0.name, $0.shape) }))
                // Nodes in file order (the stats come in a topological order).
                let position = Dictionary(uniqueKeysWithValues: graph.nodes.enumerated().map { ($0.element.name, $0.offset) })
                stats.sort { (position[$0.node.name] ?? 0) < (position[$1.node.name] ?? 0) }
            } catch {
                shapeError = "\(error)"
            }
        }
        nodeStats = stats
        self.shapeError = shapeError
    }

    /// The header's feature bits in words.
    public var features: [String] {
        var f: [String] = []
        if bundle.header.requiredFeatures & Format.requiredQuantized != 0 { f.append("quantized (required)") }
        if bundle.header.optionalFeatures & Format.optionalDeflate != 0 { f.append("deflate") }
        return f
    }

    /// How a tensor is stored beyond its dtype: its quantization, or the half-precision format.
    public func quantizationLabel(_ t: TensorInfo) -> String {
        guard let q = t.quant, let p = quantization?.params[q] else {
            return t.dtype == .f16 || t.dtype == .bf16 ? t.dtype.description : ""
        }
        return p.axis < 0 ? "affine per-tensor" : "affine per-channel axis \(p.axis)"
    }
}

/// Summary statistics of one tensor's values (NaN and ±Inf counted apart).
public struct TensorStats: Sendable {
    public var count = 0
    public var nan = 0
    public var inf = 0
    public var min = Double.infinity
    public var max = -Double.infinity
    public var mean = 0.0
    public var std = 0.0

    public init(_ values: [Float]) {
        var sum = 0.0
        var sumSq = 0.0
        for v in values {
            if v.isNaN {
                nan += 1
                continue
            }
            if v.isInfinite { inf += 1 }
            let d = Double(v)
            min = Swift.min(min, d)
            max = Swift.max(max, d)
            if v.isFinite {
                sum += d
                sumSq += d * d
                count += 1
            }
        }
        if count > 0 {
            mean = sum / Double(count)
            std = (Swift.max(0, sumSq / Double(count) - mean * mean)).squareRoot()
        }
        count = values.count
    }
}
