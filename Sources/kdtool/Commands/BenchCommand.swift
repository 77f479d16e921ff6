import ArgumentParser
import KDBundle
import KDInterop
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time a model's forward pass: per-layer time, latency percentiles and throughput per batch size, peak memory.",
        discussion: """
            Inputs are deterministic synthetic images of the model's input shape (speed does not depend on pixel values). \
            Per-layer times come from the fused inference path (a convolution step includes its folded batch norm and \
            ReLU), summed over --runs passes at the largest batch size and sorted, with their share of the total; \
            where the workers take slices of the batch, each times its own steps and a step's time is their sum \
            divided by the thread count, so the column adds up to about a pass's wall time \
            (tools/ort_layers.py prints ONNX Runtime's per node). \
            --compare-onnxruntime exports the model to ONNX, runs ONNX Runtime (the Python venv that tools/setup creates, \
            or --python) on the same inputs, batch sizes and thread count, and prints kdtool's speed over its. \
            The two are timed in alternating rounds (--rounds; ONNX Runtime stays loaded in a child process), so both \
            see the same machine: on a shared machine the speed drifts by tens of percent within a minute, and only \
            ratios taken side by side mean anything. ONNX Runtime picks its kernels from the CPU (AVX-512 where \
            there is AVX-512); the first line says what it sees, and a note says when that differs from kdtool's \
            kernels (an AVX2 build, KDTOOL_PORTABLE=1, on an AVX-512 CPU). \
            With batch 1 among the sizes and more than one thread, the plan first times each layer split over the threads \
            and on one thread alone, and runs alone those that were faster so (the results are the same bits either way; \
            --no-tune splits every layer). The layers chosen are listed.

            Examples:
              kdtool bench student.kdb
              kdtool bench resnet20.kdb --batch 1,16,64 --threads 2 --compare-onnxruntime
              kdtool bench student.kdb --compare-onnxruntime --python .build/peers/python-avx2   # ORT's AVX2 kernels
              kdtool bench student.kdb --json
              kdtool bench student.kdb --batch 1 --threads 2 --no-tune   # every layer split over both threads
              mpirun -np 2 kdtool bench resnet20.kdb --allreduce     # the ranks' links, and this model's gradient sum

            --allreduce (under mpirun, N ≥ 2 ranks) times kdtool's ring allreduce instead: message sizes from 1 KiB to \
            16 MiB and the model's gradient size, the latency α and inverse bandwidth β fitted to the ring's cost \
            2(N−1)·α + 2(N−1)/N·bytes·β, and the model's gradient sum per step (docs/distributed.md uses them).
            """)

    @Argument(help: "The model bundle.")
    var model: String

    @Option(help: "Batch sizes, comma-separated.")
    var batch: String = "1,64"

    @Option(help: "Worker threads.")
    var threads: Int = 2

    @Option(help: "Timed passes per batch size.")
    var runs: Int = 30

    @Flag(help: "Also run ONNX Runtime on the exported model and print the ratio.")
    var compareOnnxruntime = false

    @Option(help: "With --compare-onnxruntime: alternating rounds the --runs passes are split into.")
    var rounds: Int = 5

    @Option(
        name: .customLong("python"),
        help: """
            With --compare-onnxruntime: a Python with onnxruntime (default .build/venv-onnx/bin/python; \
            .build/peers/python-avx2 from tools/setup-peers hides AVX-512 from it, the peer of an AVX2 build).
            """)
    var pythonPath: String?

    @Flag(help: "Print one JSON document.")
    var json = false

    @Flag(inversion: .prefixedNo, help: "At batch 1 on several threads, run alone the layers that split slower (measured first).")
    var tune = true

    @Flag(help: "Under mpirun: time the gradient allreduce between the ranks instead of the forward pass.")
    var allreduce = false

    /// The pause before each timing round with --compare-onnxruntime, longer than either side's spinning workers.
    static let quietMicroseconds: UInt32 = 150_000

    func run() throws {
        if allreduce { return try runAllreduce() }
        Parallel.configure(threads: threads)
        let sizes = batch.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: " ")) }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 }), runs > 0 else {
            throw ValidationError("--batch takes positive integers (e.g. 1,64) and --runs must be positive")
        }
        let (m, bundle) = try loadModel(model)
        let plan = try reportingErrors { try InferencePlan(m) }
        let shape = Array(m.inputShape.dropFirst())
        let per = shape.reduce(1, *)
        func input(_ n: Int) -> Tensor {
            Tensor(shape: [n] + shape, values: (0..<(n * per)).map { Float(($0 &* 2_654_435_761) % 1000) / 500 - 1 })
        }
        let inputs = sizes.map(input)
        let tuning = tune && threads > 1 && sizes.contains(1) ? try reportingErrors { try plan.tuneThreads(input(1)) } : nil
        var mine = [[Double]](repeating: [], count: sizes.count)
        var theirs = [[Double]](repeating: [], count: sizes.count)
        var peerUnits = ""
        if compareOnnxruntime {
            guard rounds > 0 else { throw ValidationError("--rounds must be positive") }
            let peer = try OnnxRuntimePeer.Session(model: m, bundle: bundle, inputs: inputs, threads: threads, python: pythonPath)
            peerUnits = peer.vectorUnits
            let x86 = ["AVX-512", "AVX2"]
            if peerUnits != VectorUnits.name && x86.contains(peerUnits) && x86.contains(VectorUnits.name) && !json {
                warn(
                    "kdtool: note: kdtool runs its \(VectorUnits.name) kernels and ONNX Runtime sees \(peerUnits)"
                        + (peerUnits == "AVX-512" && VectorUnits.name == "AVX2"
                            ? "; --python .build/peers/python-avx2 (tools/setup-peers) runs it on its AVX2 kernels" : ""))
            }
            for r in 0..<rounds {
                let k = runs / rounds + (r < runs % rounds ? 1 : 0)
                guard k > 0 else { continue }
                for i in sizes.indices {
                    // Each side starts its round on a quiet machine: ONNX Runtime's idle workers keep
                    // spinning for tens of milliseconds after a run (measured: 40 ms of CPU in the
                    // half second after one), and ours for a few, which would slow the other's round.
                    usleep(Self.quietMicroseconds)
                    mine[i] += try reportingErrors { try SpeedProbe.samples(plan, inputs[i], runs: k, warmup: r == 0 ? 3 : 1) }
                    usleep(Self.quietMicroseconds)
                    theirs[i] += try peer.measure(input: i, runs: k)
                }
            }
        } else {
            for i in sizes.indices { mine[i] = try reportingErrors { try SpeedProbe.samples(plan, inputs[i], runs: runs) } }
        }
        func summary(_ i: Int, _ t: [Double]) -> (batch: Int, p50: Double, p99: Double, ips: Double) {
            let p50 = SpeedProbe.quantile(t, 0.5)
            return (sizes[i], p50, SpeedProbe.quantile(t, 0.99), Double(sizes[i]) * 1000 / max(p50, 1e-9))
        }
        let results = sizes.indices.map { summary($0, mine[$0]) }
        let ort = compareOnnxruntime ? sizes.indices.map { summary($0, theirs[$0]) } : []
        let big = inputs[sizes.firstIndex(of: sizes.max()!)!]
        var layer = [Double](repeating: 0, count: plan.stepNames.count)
        for _ in 0..<runs { _ = try reportingErrors { try plan.run(big) { i, s in layer[i] += s } } }
        let total = layer.reduce(0, +)
        let layers = layer.enumerated().sorted { $0.element > $1.element }.map { i, s in
            (name: plan.stepNames[i], ms: 1000 * s / Double(runs), share: total > 0 ? s / total : 0)
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peakRSS = Int(usage.ru_maxrss) * 1024
        if json {
            var doc: [(String, JSON)] = [
                ("model", .string(model)), ("threads", .int(threads)), ("runs", .int(runs)), ("peak_rss_bytes", .int(peakRSS)),
                ("vector_units", .string(VectorUnits.name)), ("blas_core", .string(BLASCore.name)),
                ("winograd", .bool(InferencePlan.winograd)),
                (
                    "batches",
                    .array(
                        results.enumerated().map { i, r in
                            var o: [(String, JSON)] = [
                                ("batch", .int(r.batch)), ("latency_ms_p50", .number(r.p50)), ("latency_ms_p99", .number(r.p99)),
                                ("images_per_second", .number(r.ips)),
                            ]
                            if i < ort.count {
                                o += [
                                    ("onnxruntime_latency_ms_p50", .number(ort[i].p50)),
                                    ("onnxruntime_images_per_second", .number(ort[i].ips)),
                                    ("speed_ratio_vs_onnxruntime", .number(r.ips / max(ort[i].ips, 1e-9))),
                                ]
                            }
                            return .object(o)
                        })
                ),
                (
                    "layers",
                    .array(
                        layers.map { .object([("step", .string($0.name)), ("ms", .number($0.ms)), ("share", .number($0.share))]) })
                ),
            ]
            doc.insert(("batch_for_layers", .int(sizes.max()!)), at: 3)
            if compareOnnxruntime { doc.append(("onnxruntime_vector_units", .string(peerUnits))) }
            doc.append(("slice_images", .int(plan.sliceImages)))
            doc.append(
                (
                    "late_slices",
                    .array(plan.lateSlices.map { .object([("from_step", .string($0.step)), ("images", .int($0.images))]) })
                ))
            if let tuning {
                doc.append(
                    (
                        "thread_tuning",
                        .object([
                            ("steps", .int(tuning.steps)), ("solo_steps", .array(tuning.soloSteps.map { .string($0) })),
                            ("every_step_split_ms", .number(tuning.splitMilliseconds)), ("tuned_ms", .number(tuning.tunedMilliseconds)),
                            ("choices_timed", .int(tuning.candidates)),
                        ])
                    ))
            }
            print(JSON.object(doc).render())
            return
        }
        print("\(model): \(Text.grouped(m.parameterCount)) parameters, input \(shape), \(threads) threads, \(runs) runs per batch size")
        print(
            "kernels: \(VectorUnits.name) direct convolution"
                + (InferencePlan.winograd
                    ? WinogradConv.largeTiles
                        ? " and Winograd F(4×4, 3×3) (F(2×2, 3×3) where it takes fewer multiplications) for 3×3 stride-1 layers"
                        : " and Winograd F(2×2, 3×3) for 3×3 stride-1 layers (--debug-winograd small)"
                    : " only (--debug-winograd off)")
                + ", OpenBLAS \(BLASCore.name)" + (compareOnnxruntime ? "; ONNX Runtime sees \(peerUnits)" : ""))
        if sizes.contains(where: { $0 > plan.sliceImages }) {
            func images(_ k: Int) -> String { "\(k) image\(k == 1 ? "" : "s")" }
            print(
                "larger batches run in slices of \(images(plan.sliceImages))"
                    + plan.lateSlices.map { "; of \(images($0.images)) from \($0.step)" }.joined()
                    + (plan.lateSlices.isEmpty ? "" : " (a worker takes each group of images through every layer)"))
        }
        if let tuning {
            let timed =
                "\(Text.fixed(tuning.tunedMilliseconds, 3)) ms against \(Text.fixed(tuning.splitMilliseconds, 3)) ms"
                + " with every step split"
            if !tuning.soloSteps.isEmpty {
                print(
                    "batch 1 on \(threads) threads: \(tuning.soloSteps.count) of \(tuning.steps) steps run on one thread (\(timed)): "
                        + tuning.soloSteps.prefix(4).joined(separator: ", ") + (tuning.soloSteps.count > 4 ? ", …" : ""))
            } else {
                print(
                    "batch 1 on \(threads) threads: every step splits ("
                        + (tuning.candidates == 0 ? "none was faster on one thread)" : "running some on one thread was not faster)"))
            }
        }
        print(
            Text.table(
                ["batch", "p50 ms", "p99 ms", "images/s"] + (ort.isEmpty ? [] : ["ORT p50 ms", "ORT images/s", "kdtool ÷ ORT"]),
                results.enumerated().map { i, r in
                    [String(r.batch), Text.fixed(r.p50, 3), Text.fixed(r.p99, 3), Text.grouped(Int(r.ips))]
                        + (i < ort.count
                            ? [
                                Text.fixed(ort[i].p50, 3), Text.grouped(Int(ort[i].ips)),
                                Text.fixed(r.ips / max(ort[i].ips, 1e-9), 2) + "×",
                            ] : [])
                }, right: Set(0...6)))
        print("\nPer layer at batch \(sizes.max()!) (fused steps, mean of \(runs) passes)")
        print(
            Text.table(
                ["step", "ms", "share"], layers.map { [$0.name, Text.fixed($0.ms, 3), Text.fixed(100 * $0.share, 1) + "%"] },
                right: [1, 2]))
        print("\npeak RSS \(Text.bytes(peakRSS))")
    }
}

/// ONNX Runtime on the same model and inputs, through a Python venv (onnxruntime + numpy).
enum OnnxRuntimePeer {
    /// Loads the model and inputs once, then answers `INDEX RUNS` lines with a JSON list of milliseconds.
    static let script = """
        import json, sys, time
        import numpy as np
        import onnxruntime as ort
        model, threads = sys.argv[1], int(sys.argv[2])
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        xs = [np.load(p) for p in sys.argv[3:]]
        for x in xs:
            for _ in range(3):
                s.run(None, {name: x})
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as f
        except ImportError:
            from numpy.core._multiarray_umath import __cpu_features__ as f
        units = "AVX-512" if f.get("AVX512F") else "AVX2" if f.get("AVX2") and f.get("FMA3") else "neither AVX2 nor AVX-512"
        print("ready", units, flush=True)
        for line in sys.stdin:
            i, runs = (int(v) for v in line.split())
            s.run(None, {name: xs[i]})
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, {name: xs[i]})
                t.append(1000 * (time.perf_counter() - t0))
            print(json.dumps(t), flush=True)
        """

    static func python(_ pythonPath: String?) throws -> String {
        var candidates: [String] = []
        if let given = pythonPath { candidates.append(given) }
        candidates.append(".build/venv-onnx/bin/python")
        for c in candidates where access(c, X_OK) == 0 { return c }
        warn("kdtool: error: no Python with onnxruntime: run tools/setup (it creates .build/venv-onnx) or pass --python PATH")
        throw ExitCode.failure
    }

    /// ONNX Runtime kept loaded in a child process, so that its timing rounds can alternate with ours.
    final class Session {
        let dir: String
        let pid: pid_t
        let toChild: Int32
        let fromChild: Int32
        var pending: [UInt8] = []
        /// The widest vector units ONNX Runtime's process sees (NumPy's reading of CPUID: "AVX-512",
        /// "AVX2", or "neither AVX2 nor AVX-512"); it picks its kernels from the same.
        var vectorUnits = ""

        init(model: Model, bundle: ModelBundle, inputs: [Tensor], threads: Int, python pythonPath: String?) throws {
            let py = try python(pythonPath)
            let tmp = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
            var template = Array("\(tmp)/kdtool-bench-XXXXXX".utf8CString)
            guard let dirPtr = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                warn("kdtool: error: cannot create a temporary folder")
                throw ExitCode.failure
            }
            let dir = String(cString: dirPtr)
            self.dir = dir
            let onnx = dir + "/model.onnx"
            var paths: [String] = []
            do {
                try withInteropErrors {
                    try writeFileBytes(try OnnxExporter.export(model, bundle: bundle, options: .init(dynamicBatch: true)), to: onnx)
                    try writeFileBytes(Array(script.utf8), to: dir + "/bench.py")
                    for (i, x) in inputs.enumerated() {
                        let p = dir + "/x\(i).npy"
                        try Npy.write(p, shape: x.shape, floats: Array(UnsafeBufferPointer(start: x.pointer, count: x.count)))
                        paths.append(p)
                    }
                }
            } catch {
                _ = try? runProcess("/bin/rm", ["-rf", dir])
                throw error
            }
            // A child that dies makes the next request fail with EPIPE (reported below), not kill us.
            signal(SIGPIPE, SIG_IGN)
            var input: [Int32] = [0, 0]
            var output: [Int32] = [0, 0]
            guard pipe(&input) == 0, pipe(&output) == 0 else { throw ExitCode.failure }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, input[0], 0)
            posix_spawn_file_actions_adddup2(&actions, output[1], 1)
            posix_spawn_file_actions_addclose(&actions, input[1])
            posix_spawn_file_actions_addclose(&actions, output[0])
            let argv = ([py, dir + "/bench.py", onnx, String(threads)] + paths).map { strdup($0) } + [nil]
            defer { for p in argv { free(p) } }
            var pid: pid_t = 0
            let rc = posix_spawnp(&pid, py, &actions, nil, argv, environ)
            close(input[0])
            close(output[1])
            self.pid = pid
            toChild = input[1]
            fromChild = output[0]
            guard rc == 0 else {
                warn("kdtool: error: cannot start \(py): \(String(cString: strerror(rc)))")
                throw ExitCode.failure
            }
            guard let ready = try readLine(), ready.hasPrefix("ready") else { throw failed() }
            vectorUnits = String(ready.dropFirst("ready".count)).trimmingCharacters(in: " ")
        }

        deinit {
            close(toChild)
            close(fromChild)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            _ = try? OnnxRuntimePeer.runProcess("/bin/rm", ["-rf", dir])
        }

        /// Milliseconds of `runs` ONNX Runtime passes over input `input`.
        func measure(input: Int, runs: Int) throws -> [Double] {
            let request = Array("\(input) \(runs)\n".utf8)
            guard request.withUnsafeBytes({ write(toChild, $0.baseAddress!, $0.count) }) == request.count,
                let line = try readLine(), let times = try? MiniJSON.parse(Array(line.utf8)) as? [Any]
            else { throw failed() }
            return times.compactMap { $0 as? Double }
        }

        func readLine() throws -> String? {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                if let nl = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<nl], as: UTF8.self)
                    pending.removeSubrange(...nl)
                    return line
                }
                let n = buf.withUnsafeMutableBytes { read(fromChild, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return nil }
                pending += buf[0..<n]
            }
        }

        func failed() -> Error {
            warn("kdtool: error: ONNX Runtime stopped answering (its messages are above)")
            return ExitCode.failure
        }
    }

    /// Runs a program, returning its exit status and standard output (standard error goes to ours).
    static func runProcess(_ path: String, _ args: [String]) throws -> (Int32, String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ExitCode.failure }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, path, &actions, nil, argv, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            warn("kdtool: error: cannot start \(path): \(String(cString: strerror(rc)))")
            throw ExitCode.failure
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exit, String(decoding: out, as: UTF8.self))
    }
}

extension BenchCommand {
    /// Times the ring allreduce on the ranks of this MPI job and fits its cost model.
    func runAllreduce() throws {
        let world = Cluster.world
        guard world.isDistributed else {
            throw ValidationError("--allreduce times the link between ranks: start it with mpirun -np N (N ≥ 2)")
        }
        let (m, _) = try loadModel(model)
        let gradientBytes = m.trainableNames.reduce(0) { $0 + (m.parameters[$1]?.count ?? 0) } * 4
        var sizes = [1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
        if !sizes.contains(gradientBytes) { sizes.append(gradientBytes) }
        sizes.sort()
        var rows: [(bytes: Int, seconds: Double)] = []
        for bytes in sizes {
            var buffer = [Float](repeating: 1, count: max(1, bytes / 4))
            let reps = max(3, min(runs, (64 << 20) / max(bytes, 1)))
            try world.allreduceSum(&buffer, what: "warm-up")
            var times: [Double] = []
            for _ in 0..<reps {
                let t0 = monotonicSeconds()
                try world.allreduceSum(&buffer, what: "timing")
                times.append(monotonicSeconds() - t0)
            }
            // Rank 0's median; every rank took part.
            rows.append((bytes, times.sorted()[times.count / 2]))
        }
        // The ring's cost is 2(N−1)·α + 2(N−1)/N·bytes·β: α from the smallest message (latency-bound),
        // β from a least-squares slope over the messages of 256 KiB and more (bandwidth-bound).
        let n = Double(world.size)
        let large = rows.filter { $0.bytes >= 256 << 10 }
        let xs = large.map { Double($0.bytes) }
        let ys = large.map(\.seconds)
        let mx = xs.reduce(0, +) / Double(max(xs.count, 1))
        let my = ys.reduce(0, +) / Double(max(ys.count, 1))
        let slope = zip(xs, ys).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) } / max(xs.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }, 1e-30)
        let beta = max(slope, 1e-15) * n / (2 * (n - 1))
        let alpha = max(0, rows[0].seconds - 2 * (n - 1) / n * Double(rows[0].bytes) * beta) / (2 * (n - 1))
        let model = rows.first { $0.bytes == gradientBytes }!.seconds
        if json {
            let doc = JSON.object([
                ("ranks", .int(world.size)), ("model", .string(self.model)), ("gradient_bytes", .int(gradientBytes)),
                ("gradient_allreduce_seconds", .number(model)), ("alpha_seconds", .number(alpha)),
                ("beta_seconds_per_byte", .number(beta)),
                ("sizes", .array(rows.map { .object([("bytes", .int($0.bytes)), ("seconds", .number($0.seconds))]) })),
            ])
            print(doc.render())
            return
        }
        print("ring allreduce over \(world.size) ranks (kdtool's, rank 0's median per size)")
        print(
            Text.table(
                ["bytes", "ms", "GB/s (bus)"],
                rows.map { r in
                    [
                        Text.grouped(r.bytes), Text.fixed(r.seconds * 1e3, 3),
                        Text.fixed(2 * (n - 1) / n * Double(r.bytes) / r.seconds / 1e9, 2),
                    ]
                }))
        print(
            "fit: α \(Text.fixed(alpha * 1e6, 2)) µs per message, β \(Text.fixed(beta * 1e9, 4)) ns per byte (\(Text.fixed(1 / max(beta, 1e-30) / 1e9, 2)) GB/s)"
        )
        print(
            "\(self.model): \(Text.grouped(gradientBytes)) bytes of gradients, \(Text.fixed(model * 1e3, 3)) ms per allreduce on \(world.size) ranks"
        )
    }
}
