import Foundation
import KDBundle
import KDData
import KDIO
import KDNN
import KDTensor
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One input's result: its top-k classes with probabilities, or why it could not be used.
public struct Prediction: Sendable {
    public var path: String
    public var top: [(index: Int, probability: Float)]
    public var error: ImageError?
}

/// Batched inference over image files: decoding and preprocessing run on `threads` workers into
/// fixed-size batches, each batch goes through the forward pass without autograd (its buffers come
/// back from the pool every batch), and results are delivered in input order.
public final class Predictor {
    public struct Options: Sendable {
        public var batchSize = 64
        public var threads = 2
        public var topK = 5
        public var maxPixels = ImageDecoder.defaultMaxPixels
        /// nil: as the bundle's PREP says.
        public var invert: Bool?
        public init() {}
    }

    public let model: Model
    public let prep: Preprocessing
    public let options: Options
    let plan: InferencePlan

    public init(model: Model, options: Options) throws {
        self.model = model
        self.options = options
        self.plan = try InferencePlan(model)
        let s = model.inputShape
        self.prep = model.preprocessing ?? Preprocessing(channels: s[1], height: s[2], width: s[3])
        // Both a batch's activations and its decoded input must fit, checked before any output.
        let capacity = options.batchSize
        let shape = prep.shape
        let size = shape.reduce(1, *)
        try model.checkBatchFits(capacity)
        let (inputBytes, overflow) = size.multipliedReportingOverflow(by: capacity * MemoryLayout<Float>.size)
        guard !overflow, inputBytes <= Caps.current.batchBytes else {
            throw NNError(
                "a batch of \(capacity) images of \(shape) needs more than \(Caps.current.batchBytes) bytes; use a smaller --batch")
        }
    }

    /// Runs every path; `deliver` is called once per input, in order. Returning false from it stops
    /// the run (for `--strict`). `progress` gets the count done after every batch.
    public func run(_ paths: [String], deliver: (Prediction) -> Bool, progress: ((Int) -> Void)? = nil) throws {
        var i = 0
        try run(
            next: {
                guard i < paths.count else { return nil }
                i += 1
                return paths[i - 1]
            }, deliver: deliver, progress: progress)
    }

    /// The same over paths pulled one at a time from `next` (nil at the end), a batch at a time:
    /// memory does not grow with the number of inputs.
    ///
    /// Each worker takes the next batch's paths (in order, under a lock), decodes them and runs
    /// the batch through the forward pass on its own thread, so the workers never wait for each
    /// other between decoding and computing (with the two phases in lockstep over both cores,
    /// 10,000 MNIST PNGs through LeNet-5 took 1.56–1.73 times as long as decoding them alone;
    /// this way, 1.34–1.56). Batches are
    /// delivered in input order by whichever worker completes the next one; at most two batches
    /// per worker are in flight. `deliver` and `progress` are called for one batch at a time, in
    /// input order, while the caller waits in `run`. A batch's results do not depend on which
    /// worker ran it or on how many there are: the forward pass runs its fixed slices either way.
    public func run(next: () throws -> String?, deliver: (Prediction) -> Bool, progress: ((Int) -> Void)? = nil) throws {
        let shape = prep.shape
        let size = shape.reduce(1, *)
        let norm = Normalization(scale: Float(prep.scale), mean: prep.mean, std: prep.std)
        let alpha: Image.AlphaPolicy = prep.alpha == .black ? .black : prep.alpha == .drop ? .drop : .white
        let resize: ImageFolder.ResizePolicy = prep.resize == .shorterSideCrop ? .shorterSideCrop : .stretch
        let invert = options.invert ?? prep.invert
        let k = min(options.topK, model.classCount)
        let capacity = options.batchSize
        let plane = shape[1] * shape[2]
        let threads = max(1, options.threads)
        let state = Round(window: 2 * threads)
        var done = 0
        /// Hands out one computed batch's rows; false when `deliver` asked to stop.
        func deliverBatch(_ p: Round.Batch) -> Bool {
            for i in 0..<p.paths.count {
                var top: [(index: Int, probability: Float)] = []
                if p.errors[i] == nil, let probabilities = p.probabilities {
                    let classes = probabilities.count / p.paths.count
                    top = Self.topK(UnsafeBufferPointer(start: probabilities.pointer + i * classes, count: classes), k)
                }
                if !deliver(Prediction(path: p.paths[i], top: top, error: p.errors[i])) { return false }
            }
            done += p.paths.count
            progress?(done)
            return true
        }
        /// Decodes and preprocesses `paths` into rows of `x`; the errors per path.
        func decode(_ paths: [String], into x: Tensor) -> [ImageError?] {
            var errors = [ImageError?](repeating: nil, count: paths.count)
            for (i, path) in paths.enumerated() {
                do {
                    let img = try ImageDecoder.decode(file: path, maxPixels: options.maxPixels)
                    let planar = ImageFolder.prepare(img, shape: shape, alpha: alpha, resize: resize, invert: invert)
                    let row = x.pointer + i * size
                    // Channel by channel, so the inner loop is a straight pass the compiler
                    // vectorizes (the same arithmetic, in the same order, as element by element
                    // with the channel looked up).
                    planar.withUnsafeBufferPointer { src in
                        for c in 0..<shape[0] {
                            let (scale, mean, std) = (norm.scale, norm.mean[c], norm.std[c])
                            let (from, to) = (src.baseAddress! + c * plane, row + c * plane)
                            for j in 0..<plane { to[j] = (Float(from[j]) * scale - mean) / std }
                        }
                    }
                } catch let err as ImageError {
                    errors[i] = err
                } catch {
                    errors[i] = ImageError(path: path, kind: "corrupt", message: "\(error)")
                }
            }
            return errors
        }
        Parallel.chunks(threads, parts: threads) { _, _ in
            let before = Parallel.threads
            Parallel.configure(threads: 1)
            defer { Parallel.configure(threads: before) }
            while let (index, paths) = state.take(capacity: capacity, next: next) {
                // A file that fails leaves a zero row, whose output is not used. Only those are
                // cleared: the others are written whole.
                let x = Tensor(uninitialized: [paths.count] + shape)
                let errors = decode(paths, into: x)
                for (i, e) in errors.enumerated() where e != nil { (x.pointer + i * size).update(repeating: 0, count: size) }
                var batch = Round.Batch(paths: paths, errors: errors, probabilities: nil)
                if errors.contains(where: { $0 == nil }) {
                    do { batch.probabilities = try plan.probabilities(x) } catch {
                        state.fail(error)
                        return
                    }
                }
                state.complete(index, batch, deliver: deliverBatch)
            }
        }
        if let failure = state.failure { throw failure }
    }

    /// Indices of the k largest values, largest first; ties keep the lower index first. One
    /// allocation per call, of its final size (this runs once per image).
    static func topK(_ p: UnsafeBufferPointer<Float>, _ k: Int) -> [(index: Int, probability: Float)] {
        var best: [(index: Int, probability: Float)] = []
        best.reserveCapacity(k + 1)
        for (i, v) in p.enumerated() {
            if best.count < k || v > best[best.count - 1].1 {
                var at = best.count
                while at > 0 && v > best[at - 1].1 { at -= 1 }
                best.insert((i, v), at: at)
                if best.count > k { best.removeLast() }
            }
        }
        return best
    }
}

/// What the workers share, under `lock`: the batches pulled so far, those computed but not yet
/// delivered, and why pulling stopped.
///
/// The lock spins (yielding now and then) rather than sleeping, as `WorkCounter` is an atomic: a
/// thread woken from a futex is woken on the waker's core, where two workers were once seen
/// taking turns while the other core idled. It is held for pulling a batch's paths and for
/// filing a batch, never while decoding, computing or delivering.
final class Round: @unchecked Sendable {
    struct Batch {
        var paths: [String]
        var errors: [ImageError?]
        var probabilities: Tensor?
    }

    private let held = Atomic<Bool>(false)
    /// Batches a worker may pull ahead of the next one to deliver.
    let window: Int
    /// The next batch to pull and the next to deliver.
    var pulled = 0
    var delivered = 0
    var ready: [Int: Batch] = [:]
    var delivering = false
    var stopped = false
    var finished = false
    var failure: Error?

    init(window: Int) { self.window = window }

    func lock() {
        var spins = 0
        while !held.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            spins += 1
            if spins & 63 == 0 { sched_yield() }
        }
    }

    func unlock() { held.store(false, ordering: .releasing) }

    /// The next batch's index and up to `capacity` paths from `next`, in order; nil when the
    /// input is exhausted, pulling failed, or the run was stopped. Waits while `window` batches
    /// are in flight.
    func take(capacity: Int, next: () throws -> String?) -> (Int, [String])? {
        lock()
        defer { unlock() }
        while !stopped && !finished && pulled - delivered >= window {
            unlock()
            sched_yield()
            lock()
        }
        guard !stopped, !finished else { return nil }
        var paths: [String] = []
        paths.reserveCapacity(capacity)
        while paths.count < capacity {
            do {
                guard let p = try next() else {
                    finished = true
                    break
                }
                paths.append(p)
            } catch {
                failure = failure ?? error
                finished = true
                stopped = true
                return nil
            }
        }
        if paths.isEmpty { return nil }
        pulled += 1
        return (pulled - 1, paths)
    }

    /// Files batch `index` as computed; the worker that finds the next batch to deliver ready
    /// (and no one delivering) delivers it and every one ready after it, outside the lock.
    func complete(_ index: Int, _ batch: Batch, deliver: (Batch) -> Bool) {
        lock()
        ready[index] = batch
        guard !delivering else {
            unlock()
            return
        }
        delivering = true
        while !stopped, let next = ready.removeValue(forKey: delivered) {
            unlock()
            let more = deliver(next)
            lock()
            delivered += 1
            if !more { stopped = true }
        }
        delivering = false
        unlock()
    }

    func fail(_ error: Error) {
        lock()
        failure = failure ?? error
        stopped = true
        unlock()
    }
}

struct UncheckedPointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { pointer = p }
}

/// Input lists for `infer`: folders (sorted, recursive by default), single files, or `-` for
/// paths on stdin, read one path at a time (a folder is walked as the run goes, not listed first).
public struct InputList {
    private var args: ArraySlice<String>
    private let recursive: Bool
    private let stdin: () -> String?
    private var walk: FileWalk?
    private var readingStdin = false

    public init(_ args: [String], recursive: Bool, stdin: @escaping () -> String?) {
        self.args = args[...]
        self.recursive = recursive
        self.stdin = stdin
    }

    /// The next input path, nil at the end; an error naming a folder that cannot be read.
    public mutating func next() throws -> String? {
        while true {
            if readingStdin {
                while let line = stdin() {
                    let p = line.trimmingCharacters(in: " \t\r\n")
                    if !p.isEmpty { return p }
                }
                readingStdin = false
            }
            if walk != nil {
                if let p = try walk!.next() { return p }
                walk = nil
            }
            guard let a = args.popFirst() else { return nil }
            if a == "-" {
                readingStdin = true
            } else if ImageFolder.isDirectory(a) {
                walk = try FileWalk(a, recursive: recursive)
            } else {
                return a  // a missing file is reported in its own row
            }
        }
    }

    /// How many paths the list yields, counted by walking the folders once more (files are not
    /// opened); nil when it reads stdin. Unreadable folders are errors here, before any output.
    public static func count(_ args: [String], recursive: Bool) throws -> Int? {
        var n = 0
        for a in args {
            if a == "-" { return nil }
            n += ImageFolder.isDirectory(a) ? try FileWalk.count(a, recursive: recursive) : 1
        }
        return n
    }
}
