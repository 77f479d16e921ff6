/// A section that has a typed Swift model (Spec §7).
public protocol BundleSection: Equatable, Sendable {
    static var fourcc: String { get }
    init(decoding entries: [String: Value], offset: Int?) throws
    /// The map this section encodes to.
    var value: Value { get }
}

/// `LABL`: class names, index = class id.
public struct Labels: BundleSection {
    public static let fourcc = "LABL"
    public var classes: [String]

    public init(_ classes: [String]) { self.classes = classes }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        classes = try f.strings("classes")
        try f.finish()
        guard !classes.isEmpty else { throw f.invalid("classes", "LABL needs at least one class") }
        var seen = Set<String>()
        for (i, c) in classes.enumerated() {
            if c.isEmpty { throw f.invalid("classes[\(i)]", "class names must not be empty") }
            if !seen.insert(c).inserted {
                throw BundleError(.duplicateName, offset: offset, "LABL.classes[\(i)]: class '\(c)' appears twice")
            }
        }
    }

    public var value: Value { .map(["classes": .array(classes.map { .string($0) })]) }
}

/// `PREP`: how raw images become network inputs.
public struct Preprocessing: BundleSection {
    public static let fourcc = "PREP"
    public enum Resize: String, Sendable, CaseIterable {
        case stretch
        case shorterSideCrop = "shorter-side-crop"
    }
    public enum Alpha: String, Sendable, CaseIterable { case white, black, drop }

    public var channels: Int
    public var height: Int
    public var width: Int
    public var scale: Double
    public var mean: [Float]
    public var std: [Float]
    public var resize: Resize
    public var alpha: Alpha
    public var invert: Bool

    /// [C, H, W] of the network input.
    public var shape: [Int] { [channels, height, width] }

    public init(
        channels: Int, height: Int, width: Int, scale: Double = 1.0 / 255, mean: [Float]? = nil, std: [Float]? = nil,
        resize: Resize = .stretch, alpha: Alpha = .white, invert: Bool = false
    ) {
        self.channels = channels
        self.height = height
        self.width = width
        self.scale = scale
        self.mean = mean ?? Array(repeating: 0, count: channels)
        self.std = std ?? Array(repeating: 1, count: channels)
        self.resize = resize
        self.alpha = alpha
        self.invert = invert
    }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        let alphaName = try f.string("alpha")
        guard let a = Alpha(rawValue: alphaName) else { throw f.invalid("alpha", "'\(alphaName)' is not white|black|drop") }
        alpha = a
        channels = try f.uint("channels")
        guard channels == 1 || channels == 3 else { throw f.invalid("channels", "\(channels) is not 1 or 3") }
        height = try f.uint("height")
        invert = try f.bool("invert")
        mean = try f.floats("mean")
        let resizeName = try f.string("resize")
        guard let r = Resize(rawValue: resizeName) else {
            throw f.invalid("resize", "'\(resizeName)' is not stretch|shorter-side-crop")
        }
        resize = r
        scale = try f.float("scale")
        std = try f.floats("std")
        width = try f.uint("width")
        try f.finish()
        for (k, v) in [("height", height), ("width", width)] where !(1...65535).contains(v) {
            throw f.invalid(k, "\(v) is outside 1…65535")
        }
        guard mean.count == channels, std.count == channels else {
            throw f.invalid("mean", "mean and std need \(channels) values each, found \(mean.count) and \(std.count)")
        }
        if let bad = std.firstIndex(where: { $0 <= 0 }) { throw f.invalid("std[\(bad)]", "\(std[bad]) is not > 0") }
        guard scale > 0, scale <= 1 else { throw f.invalid("scale", "\(scale) is outside (0, 1]") }
    }

    public var value: Value {
        .map([
            "alpha": .string(alpha.rawValue), "channels": .uint(UInt64(channels)), "height": .uint(UInt64(height)),
            "invert": .bool(invert), "mean": .floats(mean), "resize": .string(resize.rawValue), "scale": .float(scale),
            "std": .floats(std), "width": .uint(UInt64(width)),
        ])
    }
}

/// `VMAP`: verticals (groups of classes) and the specialist owning each.
public struct VerticalMap: BundleSection {
    public static let fourcc = "VMAP"
    public struct Vertical: Equatable, Sendable {
        public var name: String
        public var classes: [Int]
        /// Content digest of the specialist teacher, or "".
        public var teacher: String
        public init(name: String, classes: [Int], teacher: String = "") {
            self.name = name
            self.classes = classes
            self.teacher = teacher
        }
    }
    public var verticals: [Vertical]

    public init(_ verticals: [Vertical]) { self.verticals = verticals }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        verticals = try f.records("verticals") { r in
            let classes = try r.ints("classes")
            let name = try r.string("name")
            let teacher = try r.string("teacher")
            if !teacher.isEmpty && !isDigest(teacher) {
                throw r.invalid("teacher", "'\(teacher)' is neither empty nor a 64-hex digest")
            }
            if classes.isEmpty { throw r.invalid("classes", "vertical '\(name)' owns no class") }
            if Set(classes).count != classes.count { throw r.invalid("classes", "class indices repeat") }
            return Vertical(name: name, classes: classes.map { Int(clamping: $0) }, teacher: teacher)
        }
        try f.finish()
    }

    /// Class indices must index the labels (Spec §7.5).
    func check(classCount: Int, offset: Int?) throws {
        for v in verticals {
            if let bad = v.classes.first(where: { $0 < 0 || $0 >= classCount }) {
                throw BundleError(
                    .classIndexOutOfRange, offset: offset,
                    "VMAP vertical '\(v.name)' names class \(bad) but the bundle has \(classCount) classes")
            }
        }
    }

    public var value: Value {
        .map([
            "verticals": .array(
                verticals.map {
                    .map([
                        "classes": .ints($0.classes.map(Int64.init)), "name": .string($0.name),
                        "teacher": .string($0.teacher),
                    ])
                })
        ])
    }
}

/// `FSPP`: node pairs whose outputs form FSP matrices.
public struct FSPPairs: BundleSection {
    public static let fourcc = "FSPP"
    public struct Pair: Equatable, Sendable {
        public var first: String
        public var second: String
        public init(_ first: String, _ second: String) {
            self.first = first
            self.second = second
        }
    }
    public var pairs: [Pair]

    public init(_ pairs: [Pair]) { self.pairs = pairs }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        pairs = try f.records("pairs") { r in Pair(try r.string("first"), try r.string("second")) }
        try f.finish()
    }

    public var value: Value {
        .map(["pairs": .array(pairs.map { .map(["first": .string($0.first), "second": .string($0.second)]) })])
    }
}

/// `HINT`: FitNets hint (teacher) and guided (student) layer candidates, and a kept regressor.
public struct Hints: BundleSection {
    public static let fourcc = "HINT"
    public var hints: [String]
    public var guided: [String]
    public var regressor: [String]

    public init(hints: [String] = [], guided: [String] = [], regressor: [String] = []) {
        self.hints = hints
        self.guided = guided
        self.regressor = regressor
    }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        guided = try f.strings("guided")
        hints = try f.strings("hints")
        regressor = try f.strings("regressor")
        try f.finish()
    }

    public var value: Value {
        .map([
            "guided": .array(guided.map { .string($0) }), "hints": .array(hints.map { .string($0) }),
            "regressor": .array(regressor.map { .string($0) }),
        ])
    }
}

/// `QNTP`: affine quantization descriptors, real = scale · (q − zero_point).
public struct Quantization: BundleSection {
    public static let fourcc = "QNTP"
    public struct Params: Equatable, Sendable {
        /// −1 for per-tensor, else the channel axis.
        public var axis: Int
        public var scale: [Float]
        public var zeroPoint: [Int64]
        public init(axis: Int, scale: [Float], zeroPoint: [Int64]) {
            self.axis = axis
            self.scale = scale
            self.zeroPoint = zeroPoint
        }

        var value: Value {
            .map(["axis": .int(Int64(axis)), "scale": .floats(scale), "zero_point": .ints(zeroPoint)])
        }
    }
    public var params: [Params]

    public init(_ params: [Params]) { self.params = params }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        params = try f.records("params") { r in
            let axis = try r.int("axis")
            let p = Params(axis: Int(clamping: axis), scale: try r.floats("scale"), zeroPoint: try r.ints("zero_point"))
            return p
        }
        try f.finish()
    }

    /// Checks one descriptor against the tensor that uses it (Spec §7.8).
    static func check(_ p: Params, for t: TensorInfo, offset: Int?) throws {
        func fail(_ why: String) -> BundleError {
            BundleError(.invalidQuantization, offset: offset, "tensor '\(t.name)': \(why)")
        }
        let range: ClosedRange<Int64>
        switch t.dtype {
        case .i8: range = -128...127
        case .u8: range = 0...255
        case .i32: range = Int64(Int32.min)...Int64(Int32.max)
        default: throw fail("dtype \(t.dtype) cannot be quantized (i8, u8 or i32)")
        }
        let expected: Int
        if p.axis == -1 {
            expected = 1
        } else {
            guard p.axis >= 0, p.axis < t.shape.count else {
                throw fail("axis \(p.axis) is outside rank \(t.shape.count)")
            }
            expected = t.shape[p.axis]
        }
        guard p.scale.count == expected, p.zeroPoint.count == expected else {
            throw fail("needs \(expected) scales and zero points, found \(p.scale.count) and \(p.zeroPoint.count)")
        }
        if let bad = p.scale.first(where: { !($0 > 0) || !$0.isFinite }) { throw fail("scale \(bad) is not finite and > 0") }
        if let bad = p.zeroPoint.first(where: { !range.contains($0) }) {
            throw fail("zero point \(bad) is outside \(range) of \(t.dtype)")
        }
    }

    public var value: Value { .map(["params": .array(params.map(\.value))]) }
}

/// `PROV`: where a model came from.
public struct Provenance: BundleSection {
    public static let fourcc = "PROV"
    public struct Parent: Equatable, Sendable {
        public var role: String
        /// Content digest of the parent bundle.
        public var digest: String
        public init(role: String, digest: String) {
            self.role = role
            self.digest = digest
        }
    }
    public var tool: String
    public var method: String
    public var parents: [Parent]
    public var hyperparameters: [String: Value]
    public var data: [String: Value]
    public var seed: Int64?
    public var metrics: [String: Value]

    public init(
        tool: String = "kdtool \(kdtoolVersion)", method: String, parents: [Parent] = [],
        hyperparameters: [String: Value] = [:], data: [String: Value] = [:], seed: Int64? = nil,
        metrics: [String: Value] = [:]
    ) {
        self.tool = tool
        self.method = method
        self.parents = parents
        self.hyperparameters = hyperparameters
        self.data = data
        self.seed = seed
        self.metrics = metrics
    }

    public init(decoding entries: [String: Value], offset: Int?) throws {
        var f = Fields(entries, context: Self.fourcc, offset: offset)
        data = try f.map("data")
        hyperparameters = try f.map("hyperparameters")
        method = try f.string("method")
        metrics = try f.map("metrics")
        parents = try f.records("parents") { r in
            let digest = try r.string("digest")
            guard isDigest(digest) else { throw r.invalid("digest", "'\(digest)' is not 64 lowercase hex characters") }
            return Parent(role: try r.string("role"), digest: digest)
        }
        seed = f.has("seed") ? try f.int("seed") : nil
        tool = try f.string("tool")
        try f.finish()
    }

    public var value: Value {
        var m: [String: Value] = [
            "data": .map(data), "hyperparameters": .map(hyperparameters), "method": .string(method),
            "metrics": .map(metrics), "tool": .string(tool),
            "parents": .array(parents.map { .map(["digest": .string($0.digest), "role": .string($0.role)]) }),
        ]
        if let seed { m["seed"] = .int(seed) }
        return .map(m)
    }
}

/// `META`: free typed key/value pairs.
public struct Metadata: BundleSection {
    public static let fourcc = "META"
    public var entries: [String: Value]

    public init(_ entries: [String: Value] = [:]) { self.entries = entries }
    public init(decoding entries: [String: Value], offset: Int?) throws { self.entries = entries }
    public var value: Value { .map(entries) }
}

/// The version string recorded in provenance.
public let kdtoolVersion = "0.1.0"

func isDigest(_ s: String) -> Bool {
    s.utf8.count == 64 && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
}
