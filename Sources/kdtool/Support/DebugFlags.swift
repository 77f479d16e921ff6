import ArgumentParser
import KDTensor

/// kdtool's hidden debugging flags. Any command takes them, anywhere on its command line; they are
/// not in `--help`, and they replace the environment variables earlier builds read:
///
///     --debug-winograd on|small|off   Winograd F(4×4)+F(2×2) (default), F(2×2) only, or none
///     --debug-no-sliding              direct convolutions tap by tap (no sliding columns)
///     --debug-winograd-tiles N        Winograd tiles per work unit (default 16)
///     --debug-whole-blocks            a batch of one keeps inverted residual blocks whole (no halves)
///     --debug-profile                 time per op kind, printed at the end of training
///
/// They stay in the recorded command line (provenance's argv, so `rerun` replays them), and the
/// kernel choices that differ from the defaults are recorded as provenance's `kernels` and in the
/// teacher-cache key (`KernelPolicy.changes`).
enum DebugFlags {
    /// Applies the debugging flags in `args` and returns the arguments without them.
    static func apply(_ args: [String]) throws -> [String] {
        var rest: [String] = []
        var i = 0
        func value(_ flag: String, _ arg: String) throws -> String {
            if let eq = arg.firstIndex(of: "=") { return String(arg[arg.index(after: eq)...]) }
            i += 1
            guard i < args.count else { throw ValidationError("\(flag) needs a value") }
            return args[i]
        }
        while i < args.count {
            let arg = args[i]
            let flag = arg.split(separator: "=", maxSplits: 1).first.map(String.init) ?? arg
            switch flag {
            case "--debug-winograd":
                let v = try value(flag, arg)
                guard let mode = KernelPolicy.Winograd(rawValue: v) else {
                    throw ValidationError("--debug-winograd takes on, small or off, not '\(v)'")
                }
                KernelPolicy.winograd = mode
            case "--debug-no-sliding":
                KernelPolicy.slidingColumns = false
            case "--debug-winograd-tiles":
                let v = try value(flag, arg)
                guard let n = Int(v), (1...4096).contains(n) else {
                    throw ValidationError("--debug-winograd-tiles takes a count from 1 to 4096, not '\(v)'")
                }
                KernelPolicy.winogradTiles = n
            case "--debug-whole-blocks":
                KernelPolicy.halvedBlocks = false
            case "--debug-profile":
                Profiler.enabled = true
            default:
                rest.append(arg)
            }
            i += 1
        }
        return rest
    }
}
