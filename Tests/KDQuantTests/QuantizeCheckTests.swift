import Foundation
import KDBundle
import KDData
import KDNN
import Testing

@testable import KDQuant

@Suite("QuantizeCheck (the pipeline as a library call)")
struct QuantizeCheckTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("calibrate, quantize, compare, time: int8 per channel on the real digits")
    func pipeline() throws {
        let digits = Self.root.appendingPathComponent("data/digits/digits.csv.gz").path
        let train = try DataSource.load(digits, .init(split: .train))
        let eval = try DataSource.load(digits, .init(split: .eval))
        var a = Architecture(.mlp)
        a.hidden = [32]
        let m = try a.build(input: [1, 8, 8], classes: 10, seed: 2)
        let bundle = try ModelBundle(bytes: BundleWriter.encode(m.contents()), name: "m.kdb")
        let norm = Normalization(scale: 1.0 / 255, mean: [0], std: [1])
        var phases = Set<String>()
        let r = try QuantizeCheck.run(
            m, bundle: bundle, comparison: eval, calibration: train, normalization: norm,
            settings: .init(scheme: .int8PerChannel, calibrationImages: 100, batchSize: 64)
        ) { phase, _, _ in phases.insert(phase) }
        #expect(r.calibrated == 100 && phases == ["calibrating", "comparing"])
        #expect(r.report.count == eval.count)
        #expect((0...1).contains(r.report.agreement) && r.report.agreement > 0.5)
        #expect(r.parameterBytesQuantized < r.parameterBytesFP32 / 2)
        #expect(r.speedFP32 > 0 && r.speedQuantized > 0)
        #expect(r.quantized.activationQuant.count > 0)
        // A quantized bundle is refused as a starting point.
        let q = try ModelBundle(bytes: BundleWriter.encode(r.contents), name: "q.kdb")
        #expect(throws: NNError.self) {
            try QuantizeCheck.run(
                r.quantized, bundle: q, comparison: eval, calibration: nil, normalization: norm, settings: .init(scheme: .fp16))
        }
    }
}
