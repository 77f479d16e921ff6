import Foundation
import KDBundle
import KDData
import KDNN
import KDTensor

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
    /// While the workers pull the paths of a batch and decode them, the first of them hands out
    /// the previous batch's results (top-k, `deliver`, `progress`): those serial steps overlap the
    /// decoding instead of leaving the other cores idle. `deliver` and `progress` are called for
    /// one batch at a time, in input order, while the caller waits in `run`.
    public func run(next: () throws -> String?, deliver: (Prediction) -> Bool, progress: ((Int) -> Void)? = nil) throws {
        Parallel.configure(threads: options.threads)
        let shape = prep.shape
        let size = shape.reduce(1, *)
        let norm = Normalization(scale: Float(prep.scale), mean: prep.mean, std: prep.std)
        let alpha: Image.AlphaPolicy = prep.alpha == .black ? .black : prep.alpha == .drop ? .drop : .white
        let resize: ImageFolder.ResizePolicy = prep.resize == .shorterSideCrop ? .shorterSideCrop : .stretch
        let invert = options.invert ?? prep.invert
        let k = min(options.topK, model.classCount)
        let capacity = options.batchSize
        let plane = shape[1] * shape[2]
        // The batch decoded and run last, not yet delivered.
        var pending: (paths: [String], errors: [ImageError?], probabilities: Tensor?)?
        var done = 0
        /// Delivers `pending`; false when `deliver` asked to stop.
        func flush() -> Bool {
            guard let p = pending else { return true }
            pending = nil
            for i in 0..<p.paths.count {
                var top: [(index: Int, probability: Float)] = []
                if p.errors[i] == nil, let probabilities = p.probabilities {
                    let classes = probabilities.count / p.paths.count
                    top = Self.topK(UnsafeBufferPointer(start: probabilities.pointer + i * classes, count: classes), k).map {
                        (index: $0.0, probability: $0.1)
                    }
                }
                if !deliver(Prediction(path: p.paths[i], top: top, error: p.errors[i])) { return false }
            }
            done += p.paths.count
            progress?(done)
            return true
        }
        let state = Round()
        while true {
            // A file that fails leaves a zero row, whose output is not used.
            let x = Tensor(zeros: [capacity] + shape)
            var errors = [ImageError?](repeating: nil, count: capacity)
            state.paths.removeAll(keepingCapacity: true)
            let first = WorkCounter()
            errors.withUnsafeMutableBufferPointer { errs in
                let e = UncheckedPointer<ImageError?>(errs.baseAddress!)
                let out = UncheckedPointer<Float>(x.pointer)
                Parallel.chunks(options.threads, parts: options.threads) { _, _ in
                    if first.take() == 0 && !flush() { state.locked { state.stopped = true } }
                    while true {
                        // Paths are pulled in order under the lock; files decode at uneven cost, so
                        // each worker takes the next one when it finishes one.
                        state.lock.lock()
                        guard !state.stopped, !state.finished, state.paths.count < capacity else {
                            state.lock.unlock()
                            return
                        }
                        let path: String?
                        do { path = try next() } catch {
                            state.failure = error
                            state.finished = true
                            state.lock.unlock()
                            return
                        }
                        guard let path else {
                            state.finished = true
                            state.lock.unlock()
                            return
                        }
                        let i = state.paths.count
                        state.paths.append(path)
                        state.lock.unlock()
                        do {
                            let img = try ImageDecoder.decode(file: path, maxPixels: options.maxPixels)
                            let planar = ImageFolder.prepare(img, shape: shape, alpha: alpha, resize: resize, invert: invert)
                            let row = out.pointer + i * size
                            // Channel by channel, so the inner loop is a straight pass the compiler
                            // vectorizes (the same arithmetic, in the same order, as element by
                            // element with the channel looked up).
                            planar.withUnsafeBufferPointer { src in
                                for c in 0..<shape[0] {
                                    let (scale, mean, std) = (norm.scale, norm.mean[c], norm.std[c])
                                    let (from, to) = (src.baseAddress! + c * plane, row + c * plane)
                                    for j in 0..<plane { to[j] = (Float(from[j]) * scale - mean) / std }
                                }
                            }
                        } catch let err as ImageError {
                            e.pointer[i] = err
                        } catch {
                            e.pointer[i] = ImageError(path: path, kind: "corrupt", message: "\(error)")
                        }
                    }
                }
            }
            if state.stopped { return }
            if let failure = state.failure { throw failure }
            let count = state.paths.count
            if count == 0 { break }
            var input = x
            if count < capacity {
                input = Tensor(uninitialized: [count] + shape)
                input.pointer.update(from: x.pointer, count: count * size)
            }
            let used = Array(errors[0..<count])
            pending = (state.paths, used, used.contains { $0 == nil } ? try plan.probabilities(input) : nil)
            if state.finished { break }
        }
        _ = flush()
    }

    /// Indices of the k largest values, largest first; ties keep the lower index first.
    static func topK(_ p: UnsafeBufferPointer<Float>, _ k: Int) -> [(Int, Float)] {
        var best: [(Int, Float)] = []
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

/// What the workers of one batch share, under `lock`: the paths pulled so far and why pulling
/// stopped.
final class Round: @unchecked Sendable {
    let lock = NSLock()
    var paths: [String] = []
    var stopped = false
    var finished = false
    var failure: Error?

    func locked(_ body: () -> Void) {
        lock.lock()
        body()
        lock.unlock()
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
