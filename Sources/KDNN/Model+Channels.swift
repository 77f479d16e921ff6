import Foundation
import KDBundle
import KDTensor

extension Model {
    /// Concatenations, slices and shuffles along channels on the tape as gathers of blocked
    /// values (`Tape.gatherChannels`), found and composed by the rules the inference plan uses
    /// (`InferencePlan.channelOp`): a channel op whose output only other channel ops read is never
    /// run, so a ShuffleNet v2 unit is one copy of the half its branch reads, and its backward
    /// one scatter of that half's gradient.
    /// The channel plan for `keep`, from the cache or made now.
    func channelPlan(keep: Set<String>, groups: [Lowering.Group]) -> ChannelPlan? {
        channelPlans.plan(keep) { ChannelPlan(self, groups: groups, keep: keep) }
    }

    struct ChannelPlan: Sendable {
        struct Gather: Sendable {
            var inputs: [String]
            var sources: [BlockedTensor.ChannelSource]
            var output: String
        }

        /// By the name of the node that starts each channel op.
        var gathers: [String: Gather] = [:]
        /// Nodes a gather stands for besides its first (a shuffle's transpose and last reshape).
        var absorbed = Set<String>()
        /// The gathers' outputs some other op, a caller or the graph's outputs read: the only ones run.
        var needed = Set<String>()

        /// Nil when no node is such a channel op.
        init?(_ model: Model, groups: [Lowering.Group], keep: Set<String>) {
            guard model.order.contains(where: { [.concat, .slice, .reshape].contains($0.op) }) else { return nil }
            var consumers: [String: Int] = [:]
            for n in model.order { for i in n.inputs { consumers[i, default: 0] += 1 } }
            var soleReader: [String: Graph.Node] = [:]
            for n in model.order { for i in Set(n.inputs) where consumers[i] == 1 { soleReader[i] = n } }
            let outputs = Set(model.graph.outputs)
            let stats = (try? model.graph.stats(tensorShapes: model.tensorShapes, batch: 1)) ?? []
            let shapes = Dictionary(stats.map { ($0.node.outputs[0], $0.outputShape) }, uniquingKeysWith: { a, _ in a })
            func shape(_ name: String) -> [Int]? { name == model.graph.inputs[0].name ? model.inputShape : shapes[name] }
            // The channels each gather's output holds, as channels of values no gather made.
            var composed: [String: [InferencePlan.ChannelRef]] = [:]
            needed = keep.union(outputs)
            for group in groups {
                let node = group.anchor
                guard group.nodes.count == 1, !absorbed.contains(node.name), [.concat, .slice, .reshape].contains(node.op),
                    let (spanned, channels) = InferencePlan.channelOp(node, shape: shape, reader: { soleReader[$0] }),
                    spanned.dropLast().allSatisfy({ !needed.contains($0.outputs[0]) }),
                    channels.allSatisfy({ model.parameters[$0.tensor] == nil && model.buffers[$0.tensor] == nil })
                else {
                    if !absorbed.contains(node.name) {
                        for g in group.nodes { needed.formUnion(g.inputs) }
                        if let r = group.residual { needed.insert(r) }
                    }
                    continue
                }
                let refs = channels.map { composed[$0.tensor]?[$0.channel] ?? $0 }
                let (inputs, sources) = InferencePlan.gatherSources(refs)
                let output = spanned.last!.outputs[0]
                composed[output] = refs
                absorbed.formUnion(spanned.dropFirst().map(\.name))
                gathers[node.name] = Gather(inputs: inputs, sources: sources, output: output)
            }
            if gathers.isEmpty { return nil }
        }
    }
}

/// Channel plans by kept names, made once per graph (`Model.channelPlans`).
final class ChannelPlanCache: @unchecked Sendable {
    private let lock = NSLock()
    private var plans: [Set<String>: Model.ChannelPlan?] = [:]

    func plan(_ keep: Set<String>, make: () -> Model.ChannelPlan?) -> Model.ChannelPlan? {
        lock.lock()
        defer { lock.unlock() }
        if let made = plans[keep] { return made }
        let plan = make()
        plans[keep] = plan
        return plan
    }

    func clear() {
        lock.lock()
        plans = [:]
        lock.unlock()
    }
}
