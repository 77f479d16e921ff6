import ArgumentParser
import KDBundle
import KDIO
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

@main
struct KDTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdtool",
        abstract: "Compress image classifiers with knowledge distillation; read and write .kdb model bundles.",
        discussion: """
            Every step reads and writes the same self-describing model bundle (.kdb, see Spec/bundle-format.md).

            Exit codes: 0 success; 1 a check failed (rerun digest mismatch, --strict stop); 2 an input (bundle, model, data, image, config) is unreadable or invalid (bundle errors carry the format error code, e.g. KDB-E04, whether open or --verify found them); 3 partial success; 4 a quality gate was exceeded; 5 an output could not be written (the previous file is kept); 6 a rank of a data-parallel (mpirun) run died or went silent; 64 usage error.

            Under `mpirun -np N` (or `srun`), train, distill, infer and eval run data-parallel over the N ranks (docs/distributed.md).
            """,
        version: "kdtool \(kdtoolVersion)",
        subcommands: [
            DemoCommand.self, InitCommand.self, TrainCommand.self, DistillCommand.self, VerticalsCommand.self, EvalCommand.self,
            InferCommand.self, QuantizeCheckCommand.self, ImportCommand.self, ExportCommand.self, RunCommand.self, CompareCommand.self,
            BenchCommand.self, RerunCommand.self, ReportCommand.self,
            InspectCommand.self,
        ]
    )

    /// Expands `--config` (possibly into a sweep of runs), then runs each command in turn.
    static func main() {
        requireVectorUnits()
        BLASCore.restartWithBetterKernelsIfNeeded()
        // Training frees and takes the same large buffers every step: keep them in the heap.
        keepFreedMemory()
        // Under mpirun/srun with more than one rank: join the job (Open MPI is loaded only then).
        ClusterSetup.start()
        let runs: [[String]]
        do {
            runs = try RunConfig.expand(Array(CommandLine.arguments.dropFirst()))
        } catch {
            warn("kdtool: error: \(error)")
            ClusterSetup.end(code: (kdtoolExitCode(for: error) ?? Exit.usage).rawValue)
        }
        for (index, args) in runs.enumerated() {
            if runs.count > 1, let output = RunConfig.finishedOutput(args) {
                warn("kdtool: run \(index + 1) of \(runs.count) (\(output)) finished before this --resume; skipped")
                continue
            }
            // The recorded command keeps the hidden --debug-* flags (provenance, rerun); the parser does not see them.
            Invocation.arguments = args
            do {
                var command = try parseAsRoot(try DebugFlags.apply(args))
                try command.run()
            } catch {
                // kdtool's own errors that no command caught get their code from the table.
                if !(error is ExitCode), let code = kdtoolExitCode(for: error) {
                    warn("kdtool: error: \(error)")
                    ClusterSetup.end(code: code.rawValue)
                }
                if Cluster.world.isDistributed {
                    // One rank's failure stops every rank (MPI_Abort); its message names the rank.
                    let code = exitCode(for: error)
                    let message = fullMessage(for: error)
                    if !message.isEmpty { warn(code.isSuccess ? message : "kdtool: error: \(message)") }
                    ClusterSetup.end(code: code.rawValue)
                }
                exit(withError: error)
            }
        }
        if runs.count > 1, runs.allSatisfy({ RunConfig.output($0) != nil }) {
            let (table, csv) = RunConfig.summary(runs)
            print("sweep of \(runs.count) runs:\n" + table)
            if let config = Invocation.configFile {
                let path = (config.hasSuffix(".yaml") ? String(config.dropLast(5)) : config) + ".summary.csv"
                if (try? AtomicOutput.write(csv, to: path)) != nil { print("summary: \(path)") }
            }
        }
        if Cluster.world.isDistributed { ClusterSetup.end(code: 0) }
    }
}

/// KDTensor is compiled for AVX2 + FMA on x86-64, or AVX-512 when the building machine has it
/// (Package.swift): on a CPU without them its first vector instruction would kill the process
/// with SIGILL, so say so plainly instead.
func requireVectorUnits() {
    #if arch(x86_64) && os(Linux)
        let flags = BLASCore.cpuFlags()
        guard !flags.isEmpty else { return }
        let missing = VectorUnits.requiredCPUFlags.filter { !flags.contains($0) }
        if !missing.isEmpty {
            warn(
                "kdtool: error: this build of kdtool uses \(VectorUnits.name) and this CPU lacks \(missing.joined(separator: ", ")); "
                    + "rebuild it on this machine (swift build -c release), or build with KDTOOL_PORTABLE=1 in the environment for an AVX2 build"
            )
            exit(1)
        }
    #endif
}
