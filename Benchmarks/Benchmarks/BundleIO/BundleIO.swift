// Bundle I/O against the simplest peer there is, `cat FILE > /dev/null`, on the same files in the
// same run: opening must cost the same for 20 MB and 200 MB (O(1) in file size), and opening plus
// reading every tensor should cost about what reading the bytes at all costs.
import Benchmark
import Foundation
import KDBundle

/// Bundles of ~20 MB and ~200 MB with the same number of tensors, written once per run.
enum Files {
    static let dir: URL = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("kdtool-bench-\(getpid())")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }()

    static func bundle(megabytes: Int, tensors: Int = 100) -> String {
        let path = dir.appendingPathComponent("b\(megabytes).kdb").path
        if FileManager.default.fileExists(atPath: path) { return path }
        let floatsPerTensor = megabytes << 20 / 4 / tensors
        var c = BundleContents()
        var state: UInt32 = 12345
        for i in 0..<tensors {
            let values = (0..<floatsPerTensor).map { _ -> Float in
                state = state &* 1_664_525 &+ 1_013_904_223
                return Float(state >> 8) / Float(1 << 24) - 0.5
            }
            c.tensors.append(.init(name: "layer\(i).weight", shape: [floatsPerTensor], floats: values))
        }
        c.labels = Labels((0..<10).map(String.init))
        try! BundleWriter.write(c, to: path)
        return path
    }
}

/// Opens the bundle and touches every float of every tensor (a sum the optimiser cannot drop).
func openAndReadAll(_ path: String) throws -> Float {
    let b = try ModelBundle(path: path)
    b.prefault()
    var total: Float = 0
    for i in b.tensors.indices {
        let data = b.tensorData(at: i)
        data.withMemoryRebound(to: Float.self) { floats in
            // Eight independent sums so the loop vectorises.
            var s = SIMD8<Float>()
            let n = floats.count / 8 * 8
            var j = 0
            while j < n {
                s += SIMD8(floats[j..<(j + 8)])
                j += 8
            }
            total += s.sum() + floats[n...].reduce(0, +)
        }
    }
    return total
}

func cat(_ path: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/cat")
    p.arguments = [path]
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    p.waitUntilExit()
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .peakMemoryResident], warmupIterations: 2, maxDuration: .seconds(10), maxIterations: 30)
    let small = Files.bundle(megabytes: 20)
    let large = Files.bundle(megabytes: 200)

    Benchmark("open 20 MB (no verify)") { b in
        for _ in b.scaledIterations { blackHole(try ModelBundle(path: small)) }
    }
    Benchmark("open 200 MB (no verify)") { b in
        for _ in b.scaledIterations { blackHole(try ModelBundle(path: large)) }
    }
    Benchmark("open + read all tensors 200 MB") { b in
        for _ in b.scaledIterations { blackHole(try openAndReadAll(large)) }
    }
    Benchmark("peer: cat 200 MB > /dev/null") { b in
        for _ in b.scaledIterations { try cat(large) }
    }
    Benchmark("verify 200 MB (CRCs + SHA-256)") { b in
        for _ in b.scaledIterations { try ModelBundle(path: large).verify() }
    }

    // Ratios taken side by side, alternating the two sides so drift hits both equally.
    // Reported ×1000: 1000 means equal time.
    let ratios = BenchmarkMetric.custom("ratio ×1000", polarity: .prefersSmaller, useScalingFactor: false)
    Benchmark("ratio: open+read 200 MB / cat 200 MB", configuration: .init(metrics: [ratios], maxIterations: 5)) { b in
        var ours: [Double] = []
        var peer: [Double] = []
        for _ in 0..<7 {
            ours.append(try seconds { blackHole(try openAndReadAll(large)) })
            peer.append(try seconds { try cat(large) })
        }
        b.measurement(ratios, Int(1000 * median(ours) / median(peer)))
    }
    Benchmark("ratio: open 200 MB / open 20 MB", configuration: .init(metrics: [ratios], maxIterations: 5)) { b in
        var big: [Double] = []
        var little: [Double] = []
        for _ in 0..<51 {
            big.append(try seconds { blackHole(try ModelBundle(path: large)) })
            little.append(try seconds { blackHole(try ModelBundle(path: small)) })
        }
        b.measurement(ratios, Int(1000 * median(big) / median(little)))
    }
}
