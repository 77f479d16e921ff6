import Foundation
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Which steps of one image split over the workers.
///
/// At batch 1 each layer splits over the workers, and a split costs the caller a few microseconds
/// (publishing the job, waiting for the helper, and reading what the other core wrote). A layer of
/// a few microseconds loses by it: shufflenetv2 ×0.5 at 32 × 32 ran slower on two threads than on
/// one. Which layers lose depends on the CPU and its caches, so the plan measures it:
/// `tuneThreads` times every step split and alone, on an example image, in alternating passes,
/// and then lets the steps that were faster alone run on the calling thread. Every kernel computes
/// each output the same way on one worker as on several, so the choice changes speed only, never a
/// bit of the result (InferencePlanTests).
extension InferencePlan {
    /// What `tuneThreads` measured and chose.
    public struct ThreadTuning: Sendable {
        /// The steps that now run on the calling thread alone (empty when every step splits).
        public let soloSteps: [String]
        /// Steps in the plan.
        public let steps: Int
        /// Median milliseconds of one image with every step split, and with the choice; the choice
        /// is kept only where it was not slower.
        public let splitMilliseconds: Double
        public let tunedMilliseconds: Double
        /// Choices with some steps alone that were timed against every step split (0: no step was
        /// faster alone, and nothing was timed).
        public let candidates: Int
    }

    /// Times each step of the one-image example `x` split over `Parallel.threads` workers and on
    /// the calling thread alone (`rounds` alternating passes each, the fastest pass of each step
    /// counted); then times whole passes with every step split and with up to three choices of
    /// steps alone (`rounds` · 2 alternating passes each) and keeps the fastest by median. Applies to
    /// runs of one image on more than one worker; does nothing on one worker or for a larger batch.
    @discardableResult
    public func tuneThreads(_ x: Tensor, rounds: Int = 6) throws -> ThreadTuning {
        solo.steps = []
        let threads = Parallel.threads
        let output = [model.graph.outputs[0]]
        guard x.rank >= 1, x.shape[0] == 1, threads > 1, rounds > 0 else {
            return ThreadTuning(soloSteps: [], steps: steps.count, splitMilliseconds: 0, tunedMilliseconds: 0, candidates: 0)
        }
        _ = try run(x)  // checks the input's shape
        for _ in 0..<2 { _ = try runSlice(x, names: output, timing: nil, batchOfOne: true) }
        var split = [Double](repeating: .infinity, count: steps.count)
        var alone = split
        for _ in 0..<rounds {
            _ = try runSlice(x, names: output, timing: { i, s in split[i] = min(split[i], s) }, batchOfOne: true)
            Parallel.configure(threads: 1)
            defer { Parallel.configure(threads: threads) }
            _ = try runSlice(x, names: output, timing: { i, s in alone[i] = min(alone[i], s) }, batchOfOne: true)
        }
        // Candidate choices: the steps faster alone, and those faster by 15 % and 30 % (a step's
        // own time does not see what its choice costs the next step, which reads its output).
        var candidates: [[Bool]] = [[]]
        for margin in [1.0, 0.85, 0.7] {
            let c = steps.indices.map { alone[$0] < margin * split[$0] }
            if c.contains(true) && !candidates.contains(c) { candidates.append(c) }
        }
        func pass() throws -> Double {
            var t0 = timespec()
            var t1 = timespec()
            clock_gettime(CLOCK_MONOTONIC, &t0)
            _ = try runSlice(x, names: output, timing: nil, batchOfOne: true)
            clock_gettime(CLOCK_MONOTONIC, &t1)
            return Double(t1.tv_sec - t0.tv_sec) * 1e3 + Double(t1.tv_nsec - t0.tv_nsec) * 1e-6
        }
        var times = [[Double]](repeating: [], count: candidates.count)
        if candidates.count > 1 {
            for _ in 0..<(2 * rounds) {
                for (k, c) in candidates.enumerated() {
                    solo.steps = c
                    times[k].append(try pass())
                }
            }
        } else {
            times[0] = [0]
        }
        let medians = times.map { $0.sorted()[$0.count / 2] }
        let best = medians.indices.min { medians[$0] < medians[$1] }!
        solo.steps = candidates[best]
        return ThreadTuning(
            soloSteps: soloStepNames, steps: steps.count, splitMilliseconds: medians[0], tunedMilliseconds: medians[best],
            candidates: candidates.count - 1)
    }

    /// The steps that run on the calling thread alone for one image on several workers.
    public var soloStepNames: [String] {
        let s = solo.steps
        return stepNames.indices.filter { $0 < s.count && s[$0] }.map { stepNames[$0] }
    }

    /// Sets which steps run alone (by step index), as `tuneThreads` would: for tests, which check
    /// that any choice gives the same bits.
    func setSoloSteps(_ steps: [Bool]) { solo.steps = steps }
}

/// The per-step choice, read at the start of every one-image run and written by `tuneThreads`.
final class SoloSteps: @unchecked Sendable {
    private let lock = NSLock()
    private var value: [Bool] = []

    var steps: [Bool] {
        get {
            lock.lock()
            defer { lock.unlock() }
            return value
        }
        set {
            lock.lock()
            value = newValue
            lock.unlock()
        }
    }
}
