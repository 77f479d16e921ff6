/// Everything a bundle holds, as values: what the writer takes and `ModelBundle.contents()` returns.
///
///     var c = BundleContents()
///     c.tensors = [.init(name: "fc.weight", shape: [10, 784], floats: weights)]
///     c.labels = Labels((0..<10).map(String.init))
///     try BundleWriter.write(c, to: "model.kdb")
public struct BundleContents: Equatable, Sendable {
    public struct Tensor: Equatable, Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: [UInt8]
        public var quant: Int?

        public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8], quant: Int? = nil) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
            self.quant = quant
        }

        /// An f32 tensor from Float values.
        public init(name: String, shape: [Int], floats: [Float]) {
            var bytes = [UInt8](repeating: 0, count: floats.count * 4)
            bytes.withUnsafeMutableBytes { dst in
                for (i, v) in floats.enumerated() { dst.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self) }
            }
            self.init(name: name, dtype: .f32, shape: shape, bytes: bytes)
        }
    }

    /// A section this version does not know, kept verbatim when a file is rewritten.
    public struct RawSection: Equatable, Sendable {
        public var fourcc: String
        public var deflated: Bool
        public var length: Int
        public var stored: [UInt8]
    }

    public var tensors: [Tensor] = []
    public var graph: Graph?
    public var labels: Labels?
    public var preprocessing: Preprocessing?
    public var verticals: VerticalMap?
    public var fspPairs: FSPPairs?
    public var hints: Hints?
    public var quantization: Quantization?
    public var provenance: Provenance?
    public var metadata: Metadata?
    /// Known sections to store deflated.
    public var deflate: Set<String> = []
    public var unknownSections: [RawSection] = []

    public init() {}

    /// Known sections present, in writer order, with their encoded payloads.
    func encodedSections() -> [(fourcc: String, critical: Bool, payload: [UInt8])] {
        let values: [String: Value?] = [
            "GRPH": graph?.value, "LABL": labels?.value, "PREP": preprocessing?.value, "VMAP": verticals?.value,
            "FSPP": fspPairs?.value, "HINT": hints?.value, "QNTP": quantization?.value, "PROV": provenance?.value,
            "META": metadata?.value,
        ]
        var out: [(String, Bool, [UInt8])] = []
        for (fourcc, critical) in Format.knownSections {
            if fourcc == "TDIR" { continue }
            if let v = values[fourcc] ?? nil { out.append((fourcc, critical, v.encoded())) }
        }
        return out
    }
}
