import ArgumentParser

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
