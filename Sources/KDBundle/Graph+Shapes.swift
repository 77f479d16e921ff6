import KDIO
import KDTensor

/// Static shape inference and cost accounting for `inspect` (Spec §7.2 output-shape rules).
extension Graph {
    public struct NodeStats: Equatable, Sendable {
        public var node: Node
        public var outputShape: [Int]
        /// Elements of the bundle tensors this node reads as trainable parameters.
        public var parameters: Int
        /// Floating-point operations for one forward pass at the given batch size (a multiply-add is 2).
        public var flops: Int

        public init(node: Node, outputShape: [Int], parameters: Int, flops: Int) {
            self.node = node
            self.outputShape = outputShape
            self.parameters = parameters
            self.flops = flops
        }
    }

    public struct ShapeError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Output shape, parameter count and FLOPs of every node in topological order, for a batch of
    /// `batch` (a `-1` batch dimension in the graph inputs takes this value). Every size is
    /// computed with overflow checks and every attribute is checked against the input it applies
    /// to, so a graph this accepts cannot make a kernel overflow or index out of range; each
    /// activation must stay within `maxActivationElements` per image.
    public func stats(tensorShapes: [String: [Int]], batch: Int = 1, maxActivationElements: Int = Caps.current.activationElements) throws
        -> [NodeStats]
    {
        var shapes: [String: [Int]] = tensorShapes
        guard batch >= 1 else { throw ShapeError(description: "batch \(batch) must be at least 1") }
        for input in inputs {
            guard input.shape.count >= 2, input.shape[0] == -1 || input.shape[0] >= 1, input.shape.dropFirst().allSatisfy({ $0 >= 1 })
            else {
                throw ShapeError(description: "graph input '\(input.name)' has shape \(input.shape): rank ≥ 2, sizes ≥ 1 (batch −1 or ≥ 1)")
            }
            let perImage = input.shape.dropFirst().reduce(into: 1) { n, d in
                n = n.multipliedReportingOverflow(by: d).overflow ? Int.max : n * d
            }
            guard perImage <= maxActivationElements else {
                throw ShapeError(
                    description:
                        "graph input '\(input.name)' has shape \(input.shape): \(perImage) values per image, above the limit of \(maxActivationElements)"
                )
            }
            shapes[input.name] = input.shape.enumerated().map { i, d in i == 0 && d == -1 ? batch : d }
        }
        var out: [NodeStats] = []
        for node in try validate(tensorNames: Set(tensorShapes.keys)) {
            let ins = node.inputs.map { shapes[$0] ?? [] }
            if [.add, .mul, .sub, .div].contains(node.op) {
                // A stored operand may broadcast over the batch but never make one.
                for (i, name) in node.inputs.enumerated() where tensorShapes[name] != nil && ins[i].count >= ins[1 - i].count {
                    guard ins[i].first == 1 || ins[1 - i].count == ins[i].count && tensorShapes[node.inputs[1 - i]] != nil else {
                        throw ShapeError(
                            description:
                                "node '\(node.name)' (\(node.op.rawValue)): stored tensor '\(name)' \(ins[i]) would set the batch dimension"
                        )
                    }
                }
            }
            let (shape, flops) = try infer(node, ins)
            let batchOf = shape.first ?? 1
            let elements = try Self.checkedProduct(shape) {
                ShapeError(description: "node '\(node.name)' (\(node.op.rawValue)): output \(shape) overflows")
            }
            guard shape.allSatisfy({ $0 >= 0 }), elements / max(batchOf, 1) <= maxActivationElements else {
                throw ShapeError(
                    description:
                        "node '\(node.name)' (\(node.op.rawValue)): output \(shape) has more than \(maxActivationElements) values per image"
                )
            }
            shapes[node.outputs[0]] = shape
            // Batch-norm running statistics (inputs 4 and 5) are state, not parameters.
            let weights = node.op == .batchnorm ? Array(node.inputs[1..<3]) : Array(node.inputs.dropFirst())
            let params = weights.filter { tensorShapes[$0] != nil }.map { tensorShapes[$0]!.reduce(1, *) }.reduce(0, +)
            out.append(NodeStats(node: node, outputShape: shape, parameters: params, flops: flops))
        }
        return out
    }

    /// The output shape of one node from its inputs' shapes (attributes checked as `validate`
    /// does, sizes as `stats` does): for building a graph node by node, where inferring the whole
    /// graph again for every new node would cost time quadratic in its size.
    public static func outputShape(of node: Node, inputs: [[Int]], maxActivationElements: Int = Caps.current.activationElements) throws
        -> [Int]
    {
        let g = Graph(inputs: [], outputs: [], outputKind: .none, nodes: [])
        try g.checkNode(node) { code, m in BundleError(code, m) }
        guard inputs.count == node.inputs.count else { throw ShapeError(description: "node '\(node.name)': unknown input shapes") }
        let (shape, _) = try g.infer(node, inputs)
        let elements = try checkedProduct(shape) { ShapeError(description: "node '\(node.name)': output \(shape) overflows") }
        guard elements / max(shape.first ?? 1, 1) <= maxActivationElements else {
            throw ShapeError(description: "node '\(node.name)': output \(shape) has more than \(maxActivationElements) values per image")
        }
        return shape
    }

    static func checkedProduct(_ xs: [Int], _ fail: () -> ShapeError) throws -> Int {
        var n = 1
        for x in xs {
            let (m, o) = n.multipliedReportingOverflow(by: x)
            guard !o else { throw fail() }
            n = m
        }
        return n
    }

    /// The output size of a sliding window along one axis (convolution and pooling alike):
    /// `⌊(size + padBegin + padEnd − dilation·(kernel − 1) − 1) / stride⌋ + 1`, rounded up instead
    /// with `ceil`, where (as in PyTorch and ONNX) the last window must start inside the input or
    /// its leading padding. Nil when the window does not fit or a size overflows.
    public static func windowOutput(size: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int, dilation: Int, ceil: Bool) -> Int? {
        Window.outputSize(size: size, kernel: kernel, stride: stride, padBegin: padBegin, padEnd: padEnd, dilation: dilation, ceil: ceil)
    }

    /// Axes made non-negative; each in range, distinct, and never the batch axis 0.
    func normalizedAxes(_ raw: [Int], rank: Int, _ fail: (String) -> ShapeError) throws -> [Int] {
        let axes = try raw.map { a -> Int in
            guard a >= -rank, a < rank else { throw fail("axis \(a) outside rank \(rank)") }
            return a < 0 ? a + rank : a
        }
        guard Set(axes).count == axes.count, !axes.contains(0) else {
            throw fail("axes \(raw) must be distinct and leave the batch axis 0 alone")
        }
        return axes
    }

    func infer(_ node: Node, _ ins: [[Int]]) throws -> ([Int], Int) {
        func fail(_ m: String) -> ShapeError { ShapeError(description: "node '\(node.name)' (\(node.op.rawValue)): \(m)") }
        let x = ins[0]
        guard !ins.contains(where: { $0.contains { $0 < 0 } }) else { throw fail("negative size in inputs \(ins)") }
        let count = try Self.checkedProduct(x) { fail("input \(x) overflows") }
        func mul(_ xs: Int...) throws -> Int { try Self.checkedProduct(xs) { fail("the operation count overflows") } }
        func window(_ k: [Int], _ s: [Int], _ p: [Int], _ d: [Int], ceil: Bool) throws -> [Int] {
            guard x.count == 4 else { throw fail("expects NCHW input, got \(x)") }
            guard k.count == 2, s.count == 2, p.count == 4, d.count == 2 else { throw fail("window attributes have the wrong length") }
            return try (0..<2).map { a in
                guard
                    let o = Graph.windowOutput(
                        size: x[2 + a], kernel: k[a], stride: s[a], padBegin: p[a], padEnd: p[a + 2], dilation: d[a], ceil: ceil)
                else { throw fail("window \(k) with stride \(s), pads \(p), dilation \(d) does not fit input \(x)") }
                // A pad as large as the kernel would make windows that see only padding.
                let (reach, overflow) = k[a].multipliedReportingOverflow(by: d[a])
                let window = overflow ? Int.max : reach
                guard p[a] < window || p[a] <= x[2 + a], p[a + 2] < window || p[a + 2] <= x[2 + a] else {
                    throw fail("pads \(p) are larger than the window \(k) and the input \(x)")
                }
                return o
            }
        }
        switch node.op {
        case .conv2d:
            let w = ins[1]
            let groups = node.int("groups")
            guard w.count == 4, x.count == 4, groups >= 1, w[0] % groups == 0, x[1] == (try? mul(w[1], groups)) else {
                throw fail("input \(x) does not match weight \(w) with groups \(groups)")
            }
            let hw = try window(
                [w[2], w[3]], node.ints("stride"), node.ints("pads"), node.ints("dilation"), ceil: false)
            let shape = [x[0], w[0], hw[0], hw[1]]
            return (shape, try mul(2, shape[0], shape[1], shape[2], shape[3], w[1], w[2], w[3]))
        case .linear:
            // Over the last axis; leading dimensions are rows (ONNX MatMul against a matrix).
            let w = ins[1]
            guard x.count >= 2, w.count == 2, x.last == w[1] else { throw fail("input \(x) does not match weight \(w)") }
            if ins.count > 2 { guard ins[2] == [w[0]] else { throw fail("bias \(ins[2]) does not match weight \(w)") } }
            return (Array(x.dropLast()) + [w[0]], try mul(2, count / max(1, w[1]), w[0], w[1]))
        case .batchnorm:
            guard x.count >= 2, ins[1...4].allSatisfy({ $0 == [x[1]] }) else {
                throw fail("scale, shift and statistics \(Array(ins[1...4])) do not match input \(x)")
            }
            return (x, try mul(2, count))
        case .relu, .sigmoid, .dropout: return (x, count)
        case .maxpool, .avgpool:
            let hw = try window(
                node.ints("kernel"), node.ints("stride"), node.ints("pads"),
                node.op == .maxpool ? node.ints("dilation") : [1, 1], ceil: node.bool("ceil_mode"))
            let shape = [x[0], x[1], hw[0], hw[1]]
            return (shape, try mul(shape[0], shape[1], shape[2], shape[3], node.ints("kernel")[0], node.ints("kernel")[1]))
        case .globalavgpool:
            guard x.count == 4 else { throw fail("expects NCHW input, got \(x)") }
            return ([x[0], x[1], 1, 1], count)
        case .softmax:
            let axis = node.int("axis")
            guard axis >= -x.count, axis < x.count else { throw fail("axis \(axis) outside rank \(x.count)") }
            return (x, count)
        case .add, .mul, .sub, .div:
            // NumPy broadcasting (`stats` checks that a stored operand does not set the batch dimension).
            guard let shape = Broadcast.shape(ins[0], ins[1]) else { throw fail("shapes \(ins[0]) and \(ins[1]) do not broadcast") }
            return (shape, try Self.checkedProduct(shape) { fail("output \(shape) overflows") })
        case .reduceMean:
            let axes = try normalizedAxes(node.ints("axes"), rank: x.count, fail)
            guard !axes.isEmpty else { throw fail("axes must not be empty") }
            var shape = x
            for a in axes { shape[a] = 1 }
            if !node.bool("keepdims") { shape = x.enumerated().filter { !axes.contains($0.offset) }.map(\.element) }
            return (shape, count)
        case .transpose:
            let perm = node.ints("perm")
            guard perm.count == x.count, Set(perm) == Set(0..<x.count), perm.first == 0 else {
                throw fail("perm \(perm) is not a permutation of the \(x.count) axes that keeps the batch first")
            }
            return (perm.map { x[$0] }, 0)
        case .pad:
            let pads = node.ints("pads")
            guard pads.count == 2 * x.count, pads[0] == 0, pads[x.count] == 0 else {
                throw fail("pads \(pads) must give a begin and an end per axis (\(2 * x.count) values), none for the batch")
            }
            let shape = try (0..<x.count).map { i -> Int in
                let (s1, o1) = x[i].addingReportingOverflow(pads[i])
                let (s2, o2) = s1.addingReportingOverflow(pads[i + x.count])
                guard !o1, !o2 else { throw fail("padded size overflows") }
                return s2
            }
            return (shape, try Self.checkedProduct(shape) { fail("output \(shape) overflows") })
        case .slice:
            let (axesRaw, starts, ends) = (node.ints("axes"), node.ints("starts"), node.ints("ends"))
            let axes = try normalizedAxes(axesRaw, rank: x.count, fail)
            guard !axes.isEmpty, starts.count == axes.count, ends.count == axes.count else {
                throw fail("axes \(axesRaw), starts \(starts) and ends \(ends) must have the same non-zero length")
            }
            var shape = x
            for (k, a) in axes.enumerated() {
                shape[a] = Shaping.sliceRange(start: starts[k], end: ends[k], size: x[a]).count
                guard shape[a] >= 1 else { throw fail("slice \(starts[k])..<\(ends[k]) of axis \(a) (size \(x[a])) is empty") }
            }
            return (shape, 0)
        case .layernorm:
            let axis = try normalizedAxes([node.int("axis")], rank: x.count, fail)[0]
            let inner = try Self.checkedProduct(Array(x[axis...])) { fail("overflow") }
            for p in ins.dropFirst() {
                guard p == Array(x[axis...]) || p == [inner] else {
                    throw fail("scale/bias \(p) do not match the normalised shape \(Array(x[axis...]))")
                }
            }
            return (x, try mul(8, count))
        case .activation:
            guard node.activation != nil else { throw fail("attributes \(node.attrs) do not describe a \(node.op.rawValue)") }
            return (x, try mul(4, count))
        case .concat:
            let axis = node.int("axis") < 0 ? node.int("axis") + x.count : node.int("axis")
            guard axis >= 0, axis < x.count else { throw fail("axis \(node.int("axis")) outside rank \(x.count)") }
            var shape = x
            for s in ins.dropFirst() {
                guard s.count == x.count, (0..<x.count).allSatisfy({ $0 == axis || s[$0] == x[$0] }) else {
                    throw fail("shapes \(x) and \(s) cannot concatenate on axis \(axis)")
                }
                let (sum, o) = shape[axis].addingReportingOverflow(s[axis])
                guard !o else { throw fail("concatenated size overflows") }
                shape[axis] = sum
            }
            return (shape, 0)
        case .flatten:
            let raw = node.int("axis")
            guard raw >= -x.count, raw <= x.count else { throw fail("axis \(raw) outside rank \(x.count)") }
            let axis = raw < 0 ? raw + x.count : raw
            // kdtool's flatten keeps the batch: the first dimension must be the batch dimension.
            guard axis >= 1 else { throw fail("axis \(raw) would fold the batch dimension into the features") }
            let outer = try Self.checkedProduct(Array(x[..<axis])) { fail("overflow") }
            let inner = try Self.checkedProduct(Array(x[axis...])) { fail("overflow") }
            guard outer == x[0] else { throw fail("axis \(raw) must be 1 for input \(x) (the batch stays the first dimension)") }
            return ([outer, inner], 0)
        case .reshape:
            let target = node.ints("shape")
            guard target.filter({ $0 == -1 }).count <= 1, target.enumerated().allSatisfy({ $1 != 0 || $0 < x.count }) else {
                throw fail("shape \(target) has more than one −1, or a 0 beyond the input's rank \(x.count)")
            }
            var shape = target.enumerated().map { i, d in d == 0 ? x[i] : d }
            if let free = shape.firstIndex(of: -1) {
                let known = try Self.checkedProduct(shape.filter { $0 != -1 }) { fail("shape \(target) overflows") }
                guard known > 0, count % known == 0 else { throw fail("cannot reshape \(x) to \(target)") }
                shape[free] = count / known
            }
            guard (try? Self.checkedProduct(shape) { fail("") }) == count else { throw fail("cannot reshape \(x) to \(target)") }
            return (shape, 0)
        case .splitLinear:
            let splits = node.ints("in_splits")
            let shared = node.int("shared")
            let total = splits.reduce(into: Int?(shared)) { acc, v in
                acc = acc.flatMap { a in a.addingReportingOverflow(v).overflow ? nil : a + v }
            }
            guard x.count == 2, total == x[1] else {
                throw fail("input \(x) does not match in_splits \(splits) + shared \(shared)")
            }
            var outFeatures = 0
            var flops = 0
            for (k, split) in splits.enumerated() {
                let w = ins[1 + 2 * k]
                guard w.count == 2, w[1] == split + shared else { throw fail("block \(k) weight \(w) expects \(split + shared) inputs") }
                outFeatures += w[0]
                let (f, o) = flops.addingReportingOverflow(try mul(2, x[0], w[0], w[1]))
                guard !o else { throw fail("the operation count overflows") }
                flops = f
            }
            return ([x[0], outFeatures], flops)
        case .l2normScale:
            let groupSum = node.ints("groups").reduce(into: Int?(0)) { acc, v in
                acc = acc.flatMap { a in a.addingReportingOverflow(v).overflow ? nil : a + v }
            }
            guard x.count == 2, groupSum == x[1] else {
                throw fail("groups \(node.ints("groups")) do not sum to the \(x.count == 2 ? x[1] : -1) features")
            }
            let gamma = ins.count > 1 ? ins[1] : []
            guard gamma.count == 1, gamma[0] == node.ints("groups").count || gamma[0] == x[1] else {
                throw fail("gamma \(gamma) must have one entry per group (\(node.ints("groups").count)) or per feature (\(x[1]))")
            }
            return (x, try mul(3, count))
        }
    }
}
