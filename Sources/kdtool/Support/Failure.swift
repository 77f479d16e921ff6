import ArgumentParser
import KDBundle
import KDData
import KDIO
import KDInterop
import KDNN
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Exit codes shared by every command (README, "Exit codes").
enum Exit {
    static let checkFailed = ExitCode(1)
    static let invalidInput = ExitCode(2)
    static let partial = ExitCode(3)
    static let gateExceeded = ExitCode(4)
    static let outputFailed = ExitCode(5)
    /// A data-parallel run lost a rank: it died, hung past --rank-timeout, or MPI failed.
    static let rankFailed = ExitCode(6)
    static let usage = ExitCode(64)
}

/// Prints one line to standard error.
func warn(_ message: String) {
    guard var line = ClusterSetup.filter(message) else { return }
    if !line.hasSuffix("\n") { line += "\n" }
    line.withCString { _ = write(2, $0, strlen($0)) }
}

/// The one place that turns an error into its exit code. Every module's error type says its
/// category (KDIO's `KDError`): an output that could not be written is 5 (the old file is still
/// there); an input that is unreadable or invalid (a bundle, an ONNX model or state dict, a
/// `.npy`, data or images, data that does not fit the model, a config file) is 2; a model or
/// method precondition that fails (a teacher and student that do not match, an unknown layer, a
/// diverged loss) is 1. KDTensor's shape errors (it depends on nothing) are preconditions. Nil for
/// errors that are not kdtool's (the argument parser's own, which it reports itself).
func kdtoolExitCode(for error: Error) -> ExitCode? {
    switch error {
    case let e as KDError:
        switch e.category {
        case .output: return Exit.outputFailed
        case .invalidInput: return Exit.invalidInput
        case .precondition: return Exit.checkFailed
        }
    case is TensorError: return Exit.checkFailed
    case is CollectiveError: return Exit.rankFailed
    case let e as RunConfig.Failure: return e.code
    default: return nil
    }
}

/// Runs `body`, turning any kdtool error into one line on stderr and its exit code — no stack trace.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        guard let code = kdtoolExitCode(for: error) else { throw error }
        warn("kdtool: error: \(error)")
        throw code
    }
}

/// The same as `reportingErrors` (kept for call sites that read as bundle operations).
func withBundleErrors<T>(_ body: () throws -> T) throws -> T { try reportingErrors(body) }
