import KDBundle
import KDTensor

/// The one pass from a model's graph to what its runners execute, shared by training
/// (`Model.forward` on the tape) and inference (`InferencePlan`): the nodes are cut into groups,
/// each a node (the anchor) and the chain of nodes that alone read what the one before made —
/// a convolution's batch norm, a residual addition, an activation, a 2×2 max pool. Each runner
/// runs a group's longest prefix it has a fused kernel for and the rest node by node: the tape
/// fuses batch norm + ReLU, batch norm + add + ReLU and add + ReLU; the inference plan adds
/// batch-norm folding, activation epilogues, residual convolutions, convolution + pool,
/// flatten + linear, global pool + flatten + linear and Winograd on top.
///
/// A value a caller reads (`keep`), a graph output, or a value rounded to an activation grid is
/// never inside a group, so it always has its value.
public struct Lowering: Sendable {
    public struct Group: Sendable {
        /// The nodes, in the order they run; the first is the anchor. Every one after the first
        /// is the only reader of the one before's output.
        public var nodes: [Graph.Node]
        /// For a group holding an addition: the addition's other operand.
        public var residual: String?

        public var anchor: Graph.Node { nodes[0] }
        /// The value the group hands on.
        public var output: String { nodes[nodes.count - 1].outputs[0] }
        /// `conv1+bn1+relu1`: how profiles and `bench --layers` name the group.
        public var label: String { nodes.map(\.name).joined(separator: "+") }
    }

    /// Groups in an order valid to run: a group runs where its last node was, so a residual
    /// addition whose other operand comes later in the graph (a downsampling shortcut) is fused
    /// all the same.
    public let groups: [Group]

    /// What may follow each kind of anchor, in order. A follower is taken when the node is the
    /// only reader of the previous output.
    enum Follower: CaseIterable { case batchnorm, add, activation, pool, flatten, dropout, linear }

    static func followers(of op: Graph.Op) -> [Follower] {
        switch op {
        case .conv2d: [.batchnorm, .add, .activation, .pool]
        case .batchnorm: [.add, .activation]
        case .add: [.activation]
        case .linear: [.activation]
        case .flatten: [.linear, .activation]
        case .globalavgpool: [.flatten, .dropout, .linear, .activation]
        default: []
        }
    }

    /// `keep`: values a caller reads besides the outputs; nil runs every node alone.
    public init(_ model: Model, keeping keep: Set<String>?) {
        guard let keep else {
            groups = model.order.map { Group(nodes: [$0]) }
            return
        }
        var readers: [String: [Graph.Node]] = [:]
        for n in model.order { for i in n.inputs { readers[i, default: []].append(n) } }
        let outputs = Set(model.graph.outputs)
        var position: [String: Int] = [:]
        for (i, n) in model.order.enumerated() { position[n.name] = i }
        /// The node that alone reads `tensor`, once, when nothing else needs its value.
        func soleReader(_ tensor: String) -> Graph.Node? {
            guard !keep.contains(tensor), !outputs.contains(tensor), model.activationQuant[tensor] == nil,
                let r = readers[tensor], r.count == 1
            else { return nil }
            return r[0]
        }
        var taken = Set<String>()
        var placed: [(at: Int, group: Group)] = []
        for (index, node) in model.order.enumerated() where !taken.contains(node.name) {
            var group = Group(nodes: [node])
            var wanted = Self.followers(of: node.op)[...]
            while let next = soleReader(group.output), !taken.contains(next.name), let kind = wanted.first {
                wanted = wanted.dropFirst()
                let fits: Bool
                switch kind {
                case .batchnorm: fits = next.op == .batchnorm
                case .add:
                    fits = next.op == .add && next.inputs.count == 2 && next.inputs[0] != next.inputs[1]
                    if fits { group.residual = next.inputs[0] == group.output ? next.inputs[1] : next.inputs[0] }
                case .activation: fits = next.op == .relu || next.activation != nil
                case .pool: fits = next.op == .maxpool && group.nodes.allSatisfy { $0.op != .add }
                case .flatten: fits = next.op == .flatten
                case .dropout: fits = next.op == .dropout
                case .linear: fits = next.op == .linear
                }
                guard fits else { continue }
                group.nodes.append(next)
                taken.insert(next.name)
            }
            placed.append((position[group.nodes.last!.name] ?? index, group))
        }
        groups = placed.sorted { $0.at < $1.at }.map(\.group)
    }
}
