import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise (CI logs, pipes).
final class ProgressLine {
    let interactive = isatty(2) != 0
    private var lastDraw = 0.0
    private var lastPlain = monotonic()
    var quiet = false

    func update(_ text: String, fraction: Double) {
        guard !quiet else { return }
        let t = monotonic()
        if interactive {
            guard t - lastDraw > 0.1 || fraction >= 1 else { return }
            lastDraw = t
            let width = 24
            let filled = Int(Double(width) * min(max(fraction, 0), 1))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            warnRaw("\r\u{1B}[K[\(bar)] \(text)")
        } else if t - lastPlain > 10 {
            // Non-interactive: a line every 10 s at most, so logs stay readable.
            lastPlain = t
            warn(text)
        }
    }

    /// Ends the bar and prints a line that stays.
    func finish(_ text: String) {
        guard !quiet else { return }
        if interactive { warnRaw("\r\u{1B}[K") }
        warn(text)
        lastPlain = monotonic()
    }
}

func warnRaw(_ s: String) {
    // Progress is rank 0's to show in a data-parallel run.
    guard Cluster.world.isRoot else { return }
    s.withCString { _ = write(2, $0, strlen($0)) }
}

func monotonic() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// SIGINT/SIGTERM set a flag that long-running commands poll between steps.
enum Interruption {
    nonisolated(unsafe) static var requested: Int32 = 0

    static func install() {
        signal(SIGINT) { _ in Interruption.requested = 1 }
        signal(SIGTERM) { _ in Interruption.requested = 1 }
        // A parent may have left these blocked (the mask survives exec); unblock them so the
        // checkpoint-and-exit path is reachable however kdtool was started.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    static var isRequested: Bool { requested != 0 }
}
