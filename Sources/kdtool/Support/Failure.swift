import ArgumentParser
import KDBundle

#if canImport(Glibc)
    import Glibc
#endif

/// Exit codes shared by every command (DESIGN.md).
enum Exit {
    static let checkFailed = ExitCode(1)
    static let invalidInput = ExitCode(2)
    static let partial = ExitCode(3)
    static let gateExceeded = ExitCode(4)
}

/// Prints one line to standard error.
func warn(_ message: String) {
    var line = message
    if !line.hasSuffix("\n") { line += "\n" }
    line.withCString { _ = write(2, $0, strlen($0)) }
}

/// Runs `body`, turning a bundle error into one line on stderr and exit code 2 — no stack trace.
func withBundleErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as BundleError {
        warn("kdtool: error: \(e)")
        throw Exit.invalidInput
    }
}
