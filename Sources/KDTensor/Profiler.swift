#if canImport(Glibc)
    import Glibc
#endif

/// Time per op kind, collected when kdtool's hidden `--debug-profile` flag is given (off otherwise:
/// one branch per op). `kdtool train` prints the table at the end of a run.
public enum Profiler {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) static var totals: [String: (seconds: Double, calls: Int)] = [:]

    @inline(__always)
    public static func measure<T>(_ label: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
        guard enabled else { return try body() }
        var t0 = timespec()
        var t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        let r = try body()
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let key = label()
        let prev = totals[key] ?? (0, 0)
        totals[key] = (prev.seconds + Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9, prev.calls + 1)
        return r
    }

    /// Rows sorted by time: label, seconds, share, calls. A label with a part in parentheses
    /// ("backward conv2d (weight)") is time inside another row's, not counted in the total.
    public static func report() -> String {
        let total = totals.filter { !$0.key.contains("(") }.values.reduce(0) { $0 + $1.seconds }
        return totals.sorted { $0.value.seconds > $1.value.seconds }.map { k, v in
            let share = total > 0 ? Int((100 * v.seconds / total).rounded()) : 0
            let name = k.count < 28 ? k + String(repeating: " ", count: 28 - k.count) : k
            return "\(name) \(Int((v.seconds * 1000).rounded())) ms  \(share)%  \(v.calls) calls"
        }.joined(separator: "\n")
    }

    public static func reset() { totals = [:] }
}
