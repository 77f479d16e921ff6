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
    /// `batch` (a `-1` batch dimension in the graph inputs takes this value).
    public func stats(tensorShapes: [String: [Int]], batch: Int = 1) throws -> [NodeStats] {
        var shapes: [String: [Int]] = tensorShapes
        for input in inputs {
            shapes[input.name] = input.shape.enumerated().map { i, d in i == 0 && d == -1 ? batch : d }
        }
        var out: [NodeStats] = []
        for node in try validate(tensorNames: Set(tensorShapes.keys)) {
            let ins = node.inputs.map { shapes[$0] ?? [] }
            let (shape, flops) = try infer(node, ins)
            shapes[node.outputs[0]] = shape
            // Batch-norm running statistics (inputs 4 and 5) are state, not parameters.
            let weights = node.op == .batchnorm ? Array(node.inputs[1..<3]) : Array(node.inputs.dropFirst())
            let params = weights.filter { tensorShapes[$0] != nil }.map { tensorShapes[$0]!.reduce(1, *) }.reduce(0, +)
            out.append(NodeStats(node: node, outputShape: shape, parameters: params, flops: flops))
        }
        return out
    }

    private func infer(_ node: Node, _ ins: [[Int]]) throws -> ([Int], Int) {
        func fail(_ m: String) -> ShapeError { ShapeError(description: "node '\(node.name)' (\(node.op.rawValue)): \(m)") }
        let x = ins[0]
        let count = x.reduce(1, *)
        func window(_ k: [Int], _ s: [Int], _ p: [Int], _ d: [Int], ceil: Bool) throws -> [Int] {
            guard x.count == 4 else { throw fail("expects NCHW input, got \(x)") }
            return try (0..<2).map { a in
                let span = x[2 + a] + p[a] + p[a + 2] - d[a] * (k[a] - 1) - 1
                guard span >= 0 else { throw fail("window \(k) does not fit input \(x)") }
                return (ceil ? (span + s[a] - 1) / s[a] : span / s[a]) + 1
            }
        }
        switch node.op {
        case .conv2d:
            let w = ins[1]
            guard w.count == 4, x.count == 4, x[1] == w[1] * node.int("groups") else {
                throw fail("input \(x) does not match weight \(w) with groups \(node.int("groups"))")
            }
            let hw = try window(
                [w[2], w[3]], node.ints("stride"), node.ints("pads"), node.ints("dilation"), ceil: false)
            let shape = [x[0], w[0], hw[0], hw[1]]
            return (shape, 2 * shape.reduce(1, *) * w[1] * w[2] * w[3])
        case .linear:
            let w = ins[1]
            guard x.count == 2, w.count == 2, x[1] == w[1] else { throw fail("input \(x) does not match weight \(w)") }
            return ([x[0], w[0]], 2 * x[0] * w[0] * w[1])
        case .batchnorm:
            guard x.count >= 2, ins[1] == [x[1]] else { throw fail("scale \(ins[1]) does not match input \(x)") }
            return (x, 2 * count)
        case .relu, .sigmoid, .dropout, .softmax: return (x, count)
        case .maxpool, .avgpool:
            let hw = try window(
                node.ints("kernel"), node.ints("stride"), node.ints("pads"),
                node.op == .maxpool ? node.ints("dilation") : [1, 1], ceil: node.bool("ceil_mode"))
            let shape = [x[0], x[1], hw[0], hw[1]]
            return (shape, shape.reduce(1, *) * node.ints("kernel").reduce(1, *))
        case .globalavgpool:
            guard x.count == 4 else { throw fail("expects NCHW input, got \(x)") }
            return ([x[0], x[1], 1, 1], count)
        case .add:
            guard ins[0] == ins[1] else { throw fail("shapes \(ins[0]) and \(ins[1]) differ") }
            return (x, count)
        case .concat:
            let axis = node.int("axis") < 0 ? node.int("axis") + x.count : node.int("axis")
            guard axis >= 0, axis < x.count else { throw fail("axis \(node.int("axis")) outside rank \(x.count)") }
            var shape = x
            for s in ins.dropFirst() {
                guard s.count == x.count, (0..<x.count).allSatisfy({ $0 == axis || s[$0] == x[$0] }) else {
                    throw fail("shapes \(x) and \(s) cannot concatenate on axis \(axis)")
                }
                shape[axis] += s[axis]
            }
            return (shape, 0)
        case .flatten:
            let axis = node.int("axis") < 0 ? node.int("axis") + x.count : node.int("axis")
            guard axis >= 0, axis <= x.count else { throw fail("axis outside rank \(x.count)") }
            return ([x[..<axis].reduce(1, *), x[axis...].reduce(1, *)], 0)
        case .reshape:
            var shape = node.ints("shape").enumerated().map { i, d in d == 0 && i < x.count ? x[i] : d }
            if let free = shape.firstIndex(of: -1) {
                let known = shape.filter { $0 != -1 }.reduce(1, *)
                guard known > 0, count % known == 0 else { throw fail("cannot reshape \(x) to \(node.ints("shape"))") }
                shape[free] = count / known
            }
            guard shape.reduce(1, *) == count else { throw fail("cannot reshape \(x) to \(node.ints("shape"))") }
            return (shape, 0)
        case .splitLinear:
            let splits = node.ints("in_splits")
            let shared = node.int("shared")
            guard x.count == 2, x[1] == splits.reduce(0, +) + shared else {
                throw fail("input \(x) does not match in_splits \(splits) + shared \(shared)")
            }
            var outFeatures = 0
            var flops = 0
            for (k, split) in splits.enumerated() {
                let w = ins[1 + 2 * k]
                guard w.count == 2, w[1] == split + shared else { throw fail("block \(k) weight \(w) expects \(split + shared) inputs") }
                outFeatures += w[0]
                flops += 2 * x[0] * w[0] * w[1]
            }
            return ([x[0], outFeatures], flops)
        case .l2normScale:
            guard x.count == 2, node.ints("groups").reduce(0, +) == x[1] else {
                throw fail("groups \(node.ints("groups")) do not sum to the \(x.count == 2 ? x[1] : -1) features")
            }
            let gamma = ins.count > 1 ? ins[1] : []
            guard gamma.count == 1, gamma[0] == node.ints("groups").count || gamma[0] == x[1] else {
                throw fail("gamma \(gamma) must have one entry per group (\(node.ints("groups").count)) or per feature (\(x[1]))")
            }
            return (x, 3 * count)
        }
    }
}
