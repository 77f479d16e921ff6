import Dispatch

/// One mini-batch: network inputs [N, C, H, W], integer labels and the dataset indices they came from.
public struct Batch: Sendable {
    public var inputs: Tensor
    public var labels: [Int]
    public var indices: [Int]
    /// The examples in the whole batch across the ranks of a data-parallel run, of which this is
    /// one rank's share (`labels.count` in a run of one process).
    public var globalCount: Int

    public init(inputs: Tensor, labels: [Int], indices: [Int], globalCount: Int? = nil) {
        self.inputs = inputs
        self.labels = labels
        self.indices = indices
        self.globalCount = globalCount ?? labels.count
    }
}

/// A deterministic supply of batches: batch `index` of `epoch` is the same whenever it is asked
/// for, which is what lets a resumed run match an uninterrupted one.
public protocol BatchSource: AnyObject, Sendable {
    var batchesPerEpoch: Int { get }
    var exampleCount: Int { get }
    func batch(epoch: Int, index: Int) -> Batch
}

extension BatchSource {
    /// Batches `start..<batchesPerEpoch` of `epoch`, the next one prepared on a background thread
    /// while the caller works on the current one.
    public func prefetching(epoch: Int, from start: Int = 0) -> AnyIterator<Batch> {
        let box = PrefetchBox()
        var next = start
        let count = batchesPerEpoch
        func schedule(_ i: Int) {
            box.group.enter()
            DispatchQueue.global(qos: .userInitiated).async {
                box.value = self.batch(epoch: epoch, index: i)
                box.group.leave()
            }
        }
        if next < count { schedule(next) }
        return AnyIterator {
            guard next < count else { return nil }
            box.group.wait()
            let b = box.value!
            next += 1
            if next < count { schedule(next) }
            return b
        }
    }
}

final class PrefetchBox: @unchecked Sendable {
    let group = DispatchGroup()
    var value: Batch?
}
