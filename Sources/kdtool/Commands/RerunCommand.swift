import ArgumentParser
import KDBundle
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

struct RerunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rerun",
        abstract: "Replay a train or distill run from its provenance and report whether the content digest matches.",
        discussion: """
            The bundle's PROV records the exact arguments of the run (after --config expansion). rerun checks that the \
            input bundles still have the digests PROV recorded, runs the same command writing to -o (default: a file \
            next to the original, ORIGINAL.rerun.kdb), and compares content digests: exit 0 when they match, 1 when not. \
            The same seed, thread count and CPU type give the same digest (DESIGN.md); --threads overrides the recorded \
            count when the machine differs.

            Examples:
              kdtool rerun distilled.kdb
              kdtool rerun runs/kd-T4-s0.kdb -o /tmp/check.kdb
            """)

    /// Options of a recorded command that name a place to write, other than the output.
    static let dropped: Set<String> = ["--teacher-cache-dir"]

    @Argument(help: "A bundle written by train or distill.")
    var bundle: String

    @Option(name: .shortAndLong, help: "Where the replayed run writes (default ORIGINAL.rerun.kdb).")
    var output: String?

    func run() throws {
        let original = try withBundleErrors { try ModelBundle(path: absolutePath(bundle)) }
        guard let prov = try withBundleErrors({ try original.provenance() }), case .array(let recorded)? = prov.hyperparameters["argv"]
        else {
            warn("kdtool: error: \(bundle) records no command line in PROV (written by `kdtool import`/`init`, or by an older kdtool)")
            throw ExitCode.failure
        }
        var args = recorded.compactMap { if case .string(let s) = $0 { s } else { nil } }
        guard let sub = args.first, ["train", "distill", "distil"].contains(sub) else {
            warn("kdtool: error: \(bundle): PROV names command '\(args.first ?? "")'; rerun replays train and distill")
            throw ExitCode.failure
        }
        // A data-parallel run is replayed by the same number of ranks (a different N sums in another order).
        if case .uint(let ranks)? = prov.hyperparameters["ranks"], Int(ranks) != Cluster.world.size {
            warn(
                "kdtool: error: \(bundle) was trained by \(ranks) ranks; replay it with the same number: mpirun -np \(ranks) kdtool rerun \(bundle)"
            )
            throw ExitCode.failure
        }
        if prov.method.hasPrefix("dml") {
            warn("kdtool: error: \(bundle) is one peer of a DML run; replay the whole run with: kdtool \(args.joined(separator: " "))")
            throw ExitCode.failure
        }
        // Relative paths in the recorded command are relative to the directory the run started in.
        let target = absolutePath(output ?? Companion.stem(bundle) + ".rerun.kdb")
        if case .string(let cwd)? = prov.hyperparameters["cwd"], cwd != currentDirectory() {
            guard chdir(cwd) == 0 else {
                warn("kdtool: error: the run started in \(cwd), which no longer exists; its relative paths cannot be resolved")
                throw ExitCode.failure
            }
            warn("in \(cwd)")
        }
        // Inputs must be what they were.
        // (The recorded output is not an input: it is the file the run wrote.)
        let outputs = Set(args.indices.filter { $0 > 0 && (args[$0 - 1] == "-o" || args[$0 - 1] == "--output") }.map { args[$0] })
        let inputs = args.dropFirst().filter { $0.hasSuffix(".kdb") && !$0.hasPrefix("-") && !outputs.contains($0) }
        let recordedDigests = Set(prov.parents.map(\.digest))
        for path in inputs {
            guard let b = try? ModelBundle(path: path) else { continue }
            if let d = try? b.contentDigest(), !recordedDigests.contains(d), !prov.parents.isEmpty {
                warn("kdtool: warning: \(path) has changed since the run (content digest \(d.prefix(12))… is not among PROV's parents)")
            }
        }
        // The recorded command comes from a file: it writes nowhere but the target. Every spelling
        // of the output option is replaced, and options that name other places to write are dropped.
        var kept: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-o" || a == "--output" || Self.dropped.contains(a) {
                i += 2
            } else if a.hasPrefix("--output=") || (a.hasPrefix("-o") && !a.hasPrefix("--"))
                || Self.dropped.contains(where: { a.hasPrefix($0 + "=") }) || a == "--resume"
            {
                i += 1
            } else {
                kept.append(a)
                i += 1
            }
        }
        args = kept + ["-o", target]
        warn("replaying: kdtool \(args.joined(separator: " "))")
        Invocation.arguments = args
        Invocation.configFile = nil
        var command = try KDTool.parseAsRoot(try DebugFlags.apply(args))
        try command.run()
        // Rank 0 wrote the replay and compares it.
        guard Cluster.world.isRoot else { return }
        let want = try withBundleErrors { try original.contentDigest() }
        let got = try withBundleErrors { try ModelBundle(path: target).contentDigest() }
        if want == got {
            print("rerun matches: content digest \(got)")
        } else {
            print("rerun differs: original \(want), replay \(got)")
            throw Exit.checkFailed
        }
    }
}
