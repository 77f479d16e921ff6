import KDBundle
import KDTensor

/// Concatenation, slicing and shuffling along channels as gathers on the channel-blocked layout
/// (`.gather` steps, `BlockedTensor.gatherChannels`): each such node's output is a list of its
/// inputs' channels, lists compose (a slice of a shuffle of a concatenation is one gather from the
/// concatenated tensors), and a gather whose output only other gathers read is never run.
/// ShuffleNet's units (concat → reshape → transpose → reshape → two slices) become one copy of
/// the channels each half needs, with no NCHW copies between.
extension InferencePlan {
    /// A channel of a named value.
    struct ChannelRef: Equatable {
        var tensor: String
        var channel: Int
    }

    /// If `node` is a concatenation along channels, a slice of channels or the first node of a
    /// channel shuffle (reshape to [N, g, C/g, H, W] → swap axes 1 and 2 → reshape back), all over
    /// 4-D values: the nodes it spans (a shuffle's later two are found through `reader`, the only
    /// reader of a value) and its output's channels as its inputs' channels.
    static func channelOp(
        _ node: Graph.Node, shape: (String) -> [Int]?, reader: (String) -> Graph.Node?
    ) -> (nodes: [Graph.Node], channels: [ChannelRef])? {
        guard let out = shape(node.outputs[0]) else { return nil }
        switch node.op {
        case .concat where out.count == 4 && (node.int("axis") == 1 || node.int("axis") == -3):
            var channels: [ChannelRef] = []
            for input in node.inputs {
                guard let s = shape(input), s.count == 4, s[0] == out[0], s[2] == out[2], s[3] == out[3] else { return nil }
                channels += (0..<s[1]).map { ChannelRef(tensor: input, channel: $0) }
            }
            return channels.count == out[1] ? ([node], channels) : nil
        case .slice where out.count == 4:
            guard let s = shape(node.inputs[0]), s.count == 4, [[1], [-3]].contains(node.ints("axes")),
                node.ints("starts").count == 1, node.ints("ends").count == 1
            else { return nil }
            let range = Shaping.sliceRange(start: node.ints("starts")[0], end: node.ints("ends")[0], size: s[1])
            guard range.count == out[1], !range.isEmpty else { return nil }
            return ([node], range.map { ChannelRef(tensor: node.inputs[0], channel: $0) })
        case .reshape where out.count == 5:
            // Output channel j of the shuffle is input channel (j mod g)·C/g + ⌊j/g⌋.
            guard let t = reader(node.outputs[0]), t.op == .transpose, t.ints("perm") == [0, 2, 1, 3, 4],
                let b = reader(t.outputs[0]), b.op == .reshape,
                let x = shape(node.inputs[0]), x.count == 4, shape(b.outputs[0]) == x,
                out[0] == x[0], out[3] == x[2], out[4] == x[3], out[1] > 0, out[1] * out[2] == x[1]
            else { return nil }
            let (g, per) = (out[1], out[2])
            return ([node, t, b], (0..<x[1]).map { j in ChannelRef(tensor: node.inputs[0], channel: (j % g) * per + j / g) })
        default:
            return nil
        }
    }

    /// A gather's inputs (each value once, in the order of first use) and its output channels'
    /// sources among them, for output channels `refs`.
    static func gatherSources(_ refs: [ChannelRef]) -> (inputs: [String], sources: [BlockedTensor.ChannelSource]) {
        var inputs: [String] = []
        var index: [String: Int] = [:]
        let sources = refs.map { ref -> BlockedTensor.ChannelSource in
            if index[ref.tensor] == nil {
                index[ref.tensor] = inputs.count
                inputs.append(ref.tensor)
            }
            return BlockedTensor.ChannelSource(input: index[ref.tensor]!, channel: ref.channel)
        }
        return (inputs, sources)
    }

    /// `steps` without the gathers whose outputs no step reads and that are neither graph outputs
    /// nor kept (their readers read the composed gathers instead), with `names` kept in step.
    static func droppingUnreadGathers(_ steps: [Step], _ names: [String], needed: Set<String>) -> ([Step], [String]) {
        var read = needed
        for step in steps { read.formUnion(step.reads) }
        var kept: ([Step], [String]) = ([], [])
        for (step, name) in zip(steps, names) {
            if case .gather(_, _, let output) = step, !read.contains(output) { continue }
            kept.0.append(step)
            kept.1.append(name)
        }
        return kept
    }
}
