import KDBundle
import KDIO
import KDTensor

/// A model is the bundle's graph plus named tensors: trainable parameters and buffers (batch-norm
/// running statistics). Loading and saving go through `BundleContents`, losslessly.
///
///     let model = try Model(bundle: ModelBundle(path: "teacher.kdb"))
///     let logits = try model.predict(images)
public final class Model: @unchecked Sendable {
    public var graph: Graph {
        didSet {
            peakActivationElements = Self.peak(graph, tensorShapes)
            channelPlans.clear()
        }
    }
    /// Trainable tensors by dotted name (`stage2.block1.conv1.weight`).
    public var parameters: [String: Tensor]
    /// Running statistics and other state that is saved but not trained.
    public var buffers: [String: Tensor]
    /// Parameters excluded from training (`META kdtool.frozen`).
    public var frozen: Set<String>
    public var labels: Labels?
    public var preprocessing: Preprocessing?
    public var fspPairs: FSPPairs?
    public var hints: Hints?
    public var verticals: VerticalMap?
    public var provenance: Provenance?
    public var metadata: [String: Value]
    /// Simulated activation quantization (`META kdtool.activation_quant`): each named value is
    /// rounded to u8 with its scale and zero point as soon as it is computed, as a runtime that
    /// executes the exported QuantizeLinear/DequantizeLinear pairs does.
    public var activationQuant: [String: ActivationQuant] = [:]
    /// Nodes in execution order.
    public private(set) var order: [Graph.Node]

    public init(
        graph: Graph, parameters: [String: Tensor], buffers: [String: Tensor], frozen: Set<String> = [], labels: Labels? = nil,
        preprocessing: Preprocessing? = nil, fspPairs: FSPPairs? = nil, hints: Hints? = nil, verticals: VerticalMap? = nil,
        provenance: Provenance? = nil, metadata: [String: Value] = [:]
    ) throws {
        self.graph = graph
        self.parameters = parameters
        self.buffers = buffers
        self.frozen = frozen
        self.labels = labels
        self.preprocessing = preprocessing
        self.fspPairs = fspPairs
        self.hints = hints
        self.verticals = verticals
        self.provenance = provenance
        self.metadata = metadata
        self.order = try graph.validate(tensorNames: Set(parameters.keys).union(buffers.keys))
        self.peakActivationElements = Self.peak(graph, tensorShapes)
    }

    /// Loads a bundle: float tensors are widened and quantized ones dequantized to f32.
    public convenience init(bundle: ModelBundle) throws {
        guard let graph = try bundle.graph() else {
            throw NNError("\(bundle.path) has no model graph (GRPH section); it holds tensors only")
        }
        let bufferNames = Model.bufferNames(graph)
        var params: [String: Tensor] = [:]
        var buffers: [String: Tensor] = [:]
        for t in bundle.tensors {
            let tensor = Tensor(shape: t.shape, values: try bundle.floats(named: t.name))
            if bufferNames.contains(t.name) { buffers[t.name] = tensor } else { params[t.name] = tensor }
        }
        var meta = try bundle.metadata()?.entries ?? [:]
        var frozen = Set<String>()
        if case .array(let names)? = meta.removeValue(forKey: Model.frozenKey) {
            for case .string(let n) in names { frozen.insert(n) }
        }
        let activations = try meta.removeValue(forKey: ActivationQuant.metadataKey).map {
            try ActivationQuant.decode($0, path: bundle.path)
        }
        try self.init(
            graph: graph, parameters: params, buffers: buffers, frozen: frozen, labels: try bundle.labels(),
            preprocessing: try bundle.preprocessing(), fspPairs: try bundle.fspPairs(), hints: try bundle.hints(),
            verticals: try bundle.verticalMap(), provenance: try bundle.provenance(), metadata: meta)
        activationQuant = activations ?? [:]
    }

    static let frozenKey = "kdtool.frozen"

    /// Batch-norm running statistics are the 4th and 5th inputs of batchnorm nodes.
    static func bufferNames(_ graph: Graph) -> Set<String> {
        Set(graph.nodes.filter { $0.op == .batchnorm }.flatMap { $0.inputs.dropFirst(3) })
    }

    /// Tensors in the order the graph first uses them (stable names and order for bundles and optimizers).
    public var tensorNames: [String] {
        var seen = Set<String>()
        var out: [String] = []
        for node in order {
            for i in node.inputs where (parameters[i] != nil || buffers[i] != nil) && seen.insert(i).inserted { out.append(i) }
        }
        for name in (parameters.keys.sorted() + buffers.keys.sorted()) where seen.insert(name).inserted { out.append(name) }
        return out
    }

    /// Trainable parameter names in graph order.
    public var trainableNames: [String] { tensorNames.filter { parameters[$0] != nil && !frozen.contains($0) } }

    public var parameterCount: Int { parameters.values.reduce(0) { $0 + $1.count } }

    public var inputShape: [Int] { graph.inputs[0].shape }

    public var classCount: Int {
        (try? graph.stats(tensorShapes: tensorShapes, batch: 1).last?.outputShape.last) ?? labels?.classes.count ?? 0
    }

    /// Shape of every parameter and buffer, for the graph's static shape inference.
    public var tensorShapes: [String: [Int]] {
        Dictionary(uniqueKeysWithValues: tensorNames.map { ($0, (parameters[$0] ?? buffers[$0])!.shape) })
    }

    /// Floating-point operations of one forward pass for one image (a multiply-add is 2).
    /// Replaces every parameter and buffer with the same-named tensor of `bundle` (a checkpoint),
    /// which must have the model's shape: a checkpoint is a file like any other.
    public func load(from bundle: ModelBundle) throws {
        func values(_ name: String, _ shape: [Int]) throws -> [Float] {
            let v = try bundle.floats(named: name)
            guard v.count == shape.reduce(1, *) else {
                throw NNError("\(bundle.path): tensor '\(name)' has \(v.count) values, the model's \(shape) needs \(shape.reduce(1, *))")
            }
            return v
        }
        for (name, t) in parameters { parameters[name] = Tensor(shape: t.shape, values: try values(name, t.shape)) }
        for (name, t) in buffers { buffers[name] = Tensor(shape: t.shape, values: try values(name, t.shape)) }
    }

    /// The values of the largest activation of one image (input included), from shape inference.
    /// Computed when the model is made and whenever its graph changes, not on every forward pass.
    public private(set) var peakActivationElements = 0
    /// The tape's channel gathers (`ChannelPlan`) by the names a caller keeps, made once: a
    /// training step asks for the same plan every step.
    let channelPlans = ChannelPlanCache()

    static func peak(_ graph: Graph, _ shapes: [String: [Int]]) -> Int {
        let stats = (try? graph.stats(tensorShapes: shapes, batch: 1)) ?? []
        // Computed before any proof that the graph fits (an import builds the model first): saturating.
        let input =
            graph.inputs.first.map { i in
                i.shape.dropFirst().reduce(1) { n, d in d < 0 || n.multipliedReportingOverflow(by: d).overflow ? Int.max : n * d }
            } ?? 0
        return stats.reduce(input) { m, s in max(m, s.outputShape.reduce(1, *)) }
    }

    /// Refuses a batch whose largest activation would exceed `Caps.current.batchBytes`, with the
    /// batch size that fits, before anything is allocated (a bundle can declare large inputs).
    public func checkBatchFits(_ n: Int) throws {
        let perImage = max(peakActivationElements, 1) * MemoryLayout<Float>.size
        let (bytes, overflow) = perImage.multipliedReportingOverflow(by: max(n, 1))
        guard !overflow, bytes <= Caps.current.batchBytes else {
            let fits = max(1, Caps.current.batchBytes / perImage)
            throw NNError(
                "a batch of \(n) needs \(perImage) bytes an image for this model's largest activation, above the limit of \(Caps.current.batchBytes) bytes; use a batch of at most \(fits)"
            )
        }
    }

    public var flopsPerImage: Int { ((try? graph.stats(tensorShapes: tensorShapes, batch: 1)) ?? []).reduce(0) { $0 + $1.flops } }

    /// The bundle contents for this model (weights, graph, labels, preprocessing, …).
    public func contents(extraTensors: [BundleContents.Tensor] = []) -> BundleContents {
        var c = BundleContents()
        c.tensors =
            tensorNames.map { name in
                let t = (parameters[name] ?? buffers[name])!
                return BundleContents.Tensor(name: name, dtype: .f32, shape: t.shape, bytes: t.bytes)
            } + extraTensors
        c.graph = graph
        c.labels = labels
        c.preprocessing = preprocessing
        c.fspPairs = fspPairs
        c.hints = hints
        c.verticals = verticals
        c.provenance = provenance
        var meta = metadata
        if !frozen.isEmpty { meta[Model.frozenKey] = .array(frozen.sorted().map { .string($0) }) }
        if !activationQuant.isEmpty { meta[ActivationQuant.metadataKey] = ActivationQuant.encode(activationQuant) }
        c.metadata = meta.isEmpty ? nil : Metadata(meta)
        c.deflate = ["GRPH", "TDIR"]
        return c
    }

    /// A deep copy (independent tensors).
    public func copy() throws -> Model {
        let m = try Model(
            graph: graph, parameters: parameters.mapValues { $0.copy() }, buffers: buffers.mapValues { $0.copy() }, frozen: frozen,
            labels: labels, preprocessing: preprocessing, fspPairs: fspPairs, hints: hints, verticals: verticals,
            provenance: provenance, metadata: metadata)
        m.activationQuant = activationQuant
        return m
    }
}

/// A model-level problem: a precondition of a model or a training run that does not hold
/// (missing graph, unsupported option), data that does not fit the model, or a loss that diverged.
public struct NNError: BodiedError {
    public enum Code: String, Sendable {
        /// A model or run precondition (exit 1).
        case precondition = "nn.precondition"
        /// The data does not fit the model: input shape, label range, unlabelled data (exit 2).
        case dataMismatch = "nn.data-mismatch"
        /// The loss became NaN or infinite (exit 1).
        case diverged = "nn.diverged"
    }
    public var body: ErrorBody<Code>
    public init(_ cause: String, code: Code = .precondition, file: String = "") { body = ErrorBody(code, file: file, cause: cause) }
    public var category: ErrorCategory { body.code == .dataMismatch ? .invalidInput : .precondition }
}
