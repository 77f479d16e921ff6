import ArgumentParser
import KDBundle
import KDData
import KDIO
import KDInference
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Classify image files (PNG, JPEG) with a model bundle, in batches, and print one row per image.",
        discussion: """
            PATH is a folder (searched recursively, in sorted order), a file, or - to read paths from stdin. Formats are recognised by content, not extension. Preprocessing (channels, alpha, resize, inversion, normalisation) comes from the bundle's PREP section. A file that cannot be used (unsupported format such as GIF or TIFF, truncated, corrupt, too many pixels, unreadable) gets a row with an error and a warning on stderr; the run goes on.

            Exit codes: 0 all images classified; 3 some failed (listed); 1 with --strict at the first failure, or a --batch too large for the model; 2 the model bundle is invalid; 5 the output could not be written (-o keeps its previous content).

            Output columns: CSV `path,label1,prob1,…,labelK,probK,error`; JSON lines {"path","top":[{"label","index","probability"}],"error"}; table for a terminal.

            Examples:
              kdtool infer student.kdb photos/ --top-k 3
              find scans -name '*.jpg' | kdtool infer student.kdb - --format jsonl -o predictions.jsonl
              kdtool infer student.kdb a.png b.jpg --format table
              mpirun -np 4 kdtool infer student.kdb photos/ -o predictions.csv     # split across ranks, rows in input order
            """)

    @Argument(help: "The model bundle.")
    var model: String

    @Argument(help: "Image files, folders, or - for paths on stdin.")
    var paths: [String]

    @Option(help: "Classes per image, most probable first.")
    var topK: Int = 1

    @Option(help: "Images per forward pass.")
    var batch: Int = 64

    @Option(help: "Threads for decoding and for the forward pass.")
    var threads: Int = 2

    @Option(help: "csv | jsonl | table")
    var format: OutputFormat = .csv

    @Option(name: .shortAndLong, help: "Write rows to this file instead of stdout.")
    var output: String?

    @Flag(help: "Stop at the first image that fails (exit 1).")
    var strict = false

    @Flag(inversion: .prefixedNo, help: "Search folders recursively.")
    var recursive = true

    @Flag(help: "Require a quantized bundle from quantize-check -o (int8 weights with QNTP parameters dequantized per layer, or fp16).")
    var quantized = false

    @Flag(inversion: .prefixedNo, help: "Override PREP: invert images (for models trained on white-on-black digits).")
    var invert: Bool?

    @Option(help: "Refuse images with more pixels than this, before decoding them.")
    var maxPixels: Int = ImageDecoder.defaultMaxPixels

    @Flag(help: "No progress or summary on stderr.")
    var quiet = false

    @Option(help: "Under mpirun: seconds a rank waits for another before it stops the job and names the silent rank.")
    var rankTimeout: Double = 600

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case csv, jsonl, table }

    func validate() throws {
        guard topK > 0, batch > 0, threads > 0, maxPixels > 0 else {
            throw ValidationError("--top-k, --batch, --threads and --max-pixels must be positive")
        }
    }

    func run() throws {
        let (model, bundle) = try loadModel(self.model)
        if quantized && !bundle.tensors.contains(where: { $0.quant != nil || $0.dtype == .f16 }) {
            warn("kdtool: error: \(self.model) holds no quantized tensors (--quantized needs a bundle from quantize-check -o)")
            throw ExitCode.failure
        }
        // Paths are read as the run goes (memory does not grow with the folder); a first walk
        // counts them for the progress line and reports unreadable folders before any output.
        // Rank 0 alone reads the input list in a data-parallel run; the others need no count.
        let total = Cluster.world.isRoot ? try reportingErrors { try InputList.count(paths, recursive: recursive) } : nil
        var inputs = InputList(paths, recursive: recursive) { readLine(strippingNewline: true) }
        var options = Predictor.Options()
        options.batchSize = batch
        options.threads = threads
        options.topK = topK
        options.maxPixels = maxPixels
        options.invert = invert
        let predictor = try reportingErrors { try Predictor(model: model, options: options) }
        let names = model.labels?.classes ?? (0..<model.classCount).map(String.init)
        let k = min(topK, model.classCount)
        Cluster.world.timeout = rankTimeout
        // In a data-parallel run rank 0 writes every row, in input order.
        let sink = try OutputSink(path: Cluster.world.isRoot ? output : nil)
        let progress = ProgressLine()
        progress.quiet = quiet
        let started = monotonic()
        var ok = 0
        var failed = 0
        var tableRows: [[String]] = []
        var stoppedEarly = false
        var writeFailure: Error?
        /// Rows are written as they are delivered; the first failed write stops the run.
        func emit(_ row: String) -> Bool {
            do {
                try sink.write(row)
                return true
            } catch {
                writeFailure = error
                return false
            }
        }

        switch format {
        case .csv:
            try sink.write(
                (["path"] + (1...k).flatMap { ["label\($0)", "prob\($0)"] } + ["error"]).map(csvField).joined(separator: ",") + "\n")
        case .jsonl, .table: break
        }
        /// What one prediction becomes: its output row (or table row) and, for a failure, a warning.
        func render(_ p: Prediction) -> Row {
            var row = Row(failed: p.error != nil, warning: p.error.map { "kdtool: warning: \(PathCoding.display($0.path)): \($0.message)" })
            switch format {
            case .csv:
                var fields = [p.path]
                for i in 0..<k {
                    fields += i < p.top.count ? [names[p.top[i].index], Text.fixed(Double(p.top[i].probability), 6)] : ["", ""]
                }
                fields.append(p.error.map { "\($0.kind): \($0.message)" } ?? "")
                row.text = fields.map(csvField).joined(separator: ",") + "\n"
            case .jsonl:
                // A name that is not UTF-8 is shown with \\xNN escapes; path_b64 holds its exact bytes.
                let doc = JSON.object(
                    [("path", .string(PathCoding.display(p.path)))]
                        + (PathCoding.isRaw(p.path) ? [("path_b64", JSON.string(PathCoding.base64(p.path)))] : []) + [
                            (
                                "top",
                                .array(
                                    p.top.map {
                                        .object([
                                            ("label", .string(names[$0.index])), ("index", .int($0.index)),
                                            ("probability", .number(Double($0.probability))),
                                        ])
                                    })
                            ),
                            ("error", p.error.map { .object([("kind", .string($0.kind)), ("message", .string($0.message))]) } ?? .null),
                        ])
                row.text = doc.render(pretty: false) + "\n"
            case .table:
                row.table =
                    [PathCoding.display(p.path)]
                    + (p.error == nil
                        ? [p.top.map { "\(names[$0.index]) \(Text.fixed(100 * Double($0.probability), 1))%" }.joined(separator: "  "), ""]
                        : ["", "\(p.error!.kind): \(p.error!.message)"])
            }
            return row
        }
        /// Counts, prints and writes a row; false stops the run (--strict, or a failed write).
        func take(_ row: Row) -> Bool {
            if let w = row.warning { warn(w) }
            if row.failed { failed += 1 } else { ok += 1 }
            if let text = row.text, !emit(text) { return false }
            if let t = row.table { tableRows.append(t) }
            if strict && row.failed {
                stoppedEarly = true
                return false
            }
            return true
        }
        func showProgress(_ done: Int) {
            let rate = Double(done) / max(monotonic() - started, 1e-9)
            if let total {
                progress.update("\(done)/\(total) images, \(Text.grouped(Int(rate))) img/s", fraction: Double(done) / Double(max(total, 1)))
            } else {
                progress.update("\(done) images, \(Text.grouped(Int(rate))) img/s", fraction: 0)
            }
        }
        try reportingErrors {
            if Cluster.world.isDistributed {
                try DistributedInference(world: Cluster.world, window: max(batch, 1) * 8).run(
                    predictor: predictor, next: { try inputs.next() }, render: render, take: take, progress: showProgress)
            } else {
                try predictor.run(next: { try inputs.next() }, deliver: { take(render($0)) }, progress: showProgress)
            }
        }
        if let writeFailure { throw writeFailure }
        if format == .table { try sink.write(Text.table(["path", "prediction", "error"], tableRows, indent: "") + "\n") }
        try sink.close()
        let seconds = monotonic() - started
        if !quiet {
            progress.finish(
                "\(ok + failed) images: \(ok) ok, \(failed) failed, \(Text.fixed(seconds, 2)) s, \(Text.grouped(Int(Double(ok + failed) / max(seconds, 1e-9)))) img/s"
            )
        }
        if stoppedEarly { throw ExitCode.failure }
        if failed > 0 { throw Exit.partial }
    }
}

/// RFC 4180 quoting when needed (CR, LF, comma, quote or a control byte anywhere in the field).
func csvField(_ s: String) -> String { PathCoding.decode(CSVField.encode(s)) }

/// stdout, or a file written atomically when the run ends: every write is checked, and a run
/// that fails (or a disk that fills) leaves the previous file as it was.
final class OutputSink {
    private let file: AtomicOutput?

    init(path: String?) throws {
        file = try path.map { p in try reportingErrors { try AtomicOutput(p) } }
    }

    /// Standard output goes through the C stdio buffer `print` also uses, so rows stay in order
    /// with everything else printed; file names that are not UTF-8 are written as their bytes.
    func write(_ s: String) throws {
        let bytes = PathCoding.bytes(s)
        if let file {
            try reportingErrors { try file.write(bytes) }
        } else {
            // Whatever `print` buffered goes first, then the row's bytes, every write checked.
            fflush(nil)
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    warn("kdtool: error: cannot write to standard output: \(String(cString: strerror(errno)))")
                    throw Exit.outputFailed
                }
                done += n
            }
        }
    }

    func close() throws {
        if let file {
            try reportingErrors { try file.commit() }
        } else if fflush(nil) != 0 {
            warn("kdtool: error: cannot write to standard output: \(String(cString: strerror(errno)))")
            throw Exit.outputFailed
        }
    }
}
