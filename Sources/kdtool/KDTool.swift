import ArgumentParser

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

            Exit codes: 0 success; 1 a check failed (--verify mismatch); 2 an input bundle is unreadable or invalid (the message carries the format error code, e.g. KDB-E04); 3 partial success; 4 a quality gate was exceeded; 64 usage error.
            """,
        version: "kdtool 0.1.0",
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
        let runs: [[String]]
        do {
            runs = try RunConfig.expand(Array(CommandLine.arguments.dropFirst()))
        } catch {
            warn("kdtool: error: \(error)")
            exit(withError: ExitCode(64))
        }
        for args in runs {
            Invocation.arguments = args
            do {
                var command = try parseAsRoot(args)
                try command.run()
            } catch {
                exit(withError: error)
            }
        }
    }
}

/// KDTensor is compiled for AVX2 + FMA on x86-64 (Package.swift): on a CPU without them its
/// first vector instruction would kill the process with SIGILL, so say so plainly instead.
func requireVectorUnits() {
    #if arch(x86_64) && os(Linux)
        guard let f = fopen("/proc/cpuinfo", "r") else { return }
        defer { fclose(f) }
        var line: UnsafeMutablePointer<CChar>?
        var size = 0
        defer { free(line) }
        while getline(&line, &size, f) > 0, let l = line {
            let text = String(cString: l)
            guard text.hasPrefix("flags") else { continue }
            let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
            let missing = ["avx2", "fma"].filter { !flags.contains($0) }
            if !missing.isEmpty {
                warn(
                    "kdtool: error: this build needs a CPU with AVX2 and FMA (x86-64-v3); this one lacks \(missing.joined(separator: ", "))"
                )
                exit(1)
            }
            return
        }
    #endif
}
