import Foundation
import KDBundle
import KDNN
import KDTensor
import Testing

@testable import KDQuant

/// Golden/quant.json from tools/gen_golden.py (independent numpy).
enum QuantGolden {
    nonisolated(unsafe) static let doc: [String: Any] = {
        let url = Bundle.module.url(forResource: "quant", withExtension: "json", subdirectory: "Golden")!
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()
    static func values(_ v: Any?) -> [Float] { ((v as! [String: Any])["values"] as! [Double]).map { Float($0) } }
    static func shape(_ v: Any?) -> [Int] { (v as! [String: Any])["shape"] as! [Int] }
}

@Suite("quantization")
struct QuantizerTests {
    let w = QuantGolden.values(QuantGolden.doc["weights"])
    let shape = QuantGolden.shape(QuantGolden.doc["weights"])

    @Test("int8 per tensor and per channel match numpy: codes, scales, SQNR")
    func int8Golden() throws {
        let cases = QuantGolden.doc["int8"] as! [String: [String: Any]]
        for (name, perChannel) in [("per_tensor", false), ("per_channel", true)] {
            let g = cases[name]!
            let (q, p) = WeightQuantizer.int8(w, shape: shape, perChannel: perChannel)
            #expect(q.map(Int.init) == g["q"] as! [Int], "\(name) codes")
            let scales = (g["scale"] as! [Double]).map { Float($0) }
            #expect(p.scale.count == scales.count && zip(p.scale, scales).allSatisfy { abs($0 - $1) <= 1e-7 * $1 })
            #expect(p.axis == (perChannel ? 0 : -1))
            let dq = WeightQuantizer.dequantize(q, params: p)
            #expect(abs(sqnr(w, dq) - (g["sqnr_db"] as! Double)) < 1e-3, "\(name) SQNR")
        }
    }

    @Test("round trip error is at most half a step per scheme")
    func roundTripBounds() {
        for perChannel in [false, true] {
            let (q, p) = WeightQuantizer.int8(w, shape: shape, perChannel: perChannel)
            let dq = WeightQuantizer.dequantize(q, params: p)
            let inner = w.count / shape[0]
            for i in w.indices {
                let s = p.scale[perChannel ? i / inner : 0]
                #expect(abs(dq[i] - w[i]) <= s / 2 * 1.0001, "element \(i)")
            }
        }
        let h = WeightQuantizer.fp16(w)
        for i in w.indices { #expect(abs(h[i] - w[i]) <= abs(w[i]) * 0x1p-11 + 1e-7) }
        let g = QuantGolden.doc["fp16"] as! [String: Any]
        #expect(h == QuantGolden.values(g["dequantized"]), "fp16 rounding matches numpy's float16")
    }

    @Test("one outlier channel: per-channel beats per-tensor, by far on the ordinary channels")
    func outlierChannel() {
        let inner = w.count / shape[0]
        /// Whole-tensor SQNR and the worst channel's.
        func measure(_ perChannel: Bool) -> (all: Double, worst: Double) {
            let (q, p) = WeightQuantizer.int8(w, shape: shape, perChannel: perChannel)
            let dq = WeightQuantizer.dequantize(q, params: p)
            let worst = (0..<shape[0]).map { c in
                sqnr(Array(w[c * inner..<(c + 1) * inner]), Array(dq[c * inner..<(c + 1) * inner]))
            }.min()!
            return (sqnr(w, dq), worst)
        }
        let (pc, pt) = (measure(true), measure(false))
        #expect(pc.all > pt.all, "per-channel \(pc.all) dB vs per-tensor \(pt.all) dB")
        #expect(pc.worst > pt.worst + 20, "worst channel: per-channel \(pc.worst) dB vs per-tensor \(pt.worst) dB")
    }

    @Test("u8 activations: scale, zero point and codes match numpy; 0 is exact")
    func activations() {
        let g = QuantGolden.doc["activation"] as! [String: Any]
        let x = QuantGolden.values(g["x"])
        let a = ActivationQuant(min: x.min()!, max: x.max()!)
        #expect(abs(a.scale - Float(g["scale"] as! Double)) <= 1e-7 * a.scale)
        #expect(a.zeroPoint == g["zero_point"] as! Int)
        #expect(x.map { Int(a.quantize($0)) } == g["q"] as! [Int])
        let y = a.applied(to: Tensor(shape: [x.count], values: x))
        let ref = QuantGolden.values(g["dequantized"])
        for i in x.indices { #expect(abs(y[i] - ref[i]) <= 1e-5) }
        #expect(a.applied(to: Tensor(shape: [1], values: [0]))[0] == 0)
    }

    @Test("SQNR of a known signal equals numpy's")
    func sqnrGolden() {
        let g = QuantGolden.doc["sine"] as! [String: Any]
        let v = sqnr(QuantGolden.values(g["x"]), QuantGolden.values(g["noisy"]))
        #expect(abs(v - (g["sqnr_db"] as! Double)) < 1e-3)
        #expect(sqnr([1, 2], [1, 2]) == .infinity)
    }

    @Test("a quantized bundle stores i8 weights with QNTP, loads back, and runs close to fp32")
    func bundle() throws {
        let arch = try Architecture(name: "lenet5")
        let model = try arch.build(input: [1, 28, 28], classes: 10, seed: 3)
        let x = Tensor(shape: [4, 1, 28, 28], values: (0..<(4 * 784)).map { Float(($0 * 37) % 101) / 50 - 1 })
        var cal = Calibrator(names: model.quantizableActivations, percentile: false)
        try cal.observe(model, batch: x)
        for scheme in QuantScheme.allCases {
            let qb = try QuantizedBundle(model: model, scheme: scheme, activations: cal.ranges(percentile: nil))
            let bytes = try BundleWriter.encode(qb.contents)
            let fp32 = try BundleWriter.encode(model.contents())
            #expect(Double(bytes.count) < Double(fp32.count) * (scheme == .fp16 ? 0.55 : 0.32), "\(scheme) shrinks the file")
            let back = try Model(bundle: try ModelBundle(bytes: bytes))
            #expect(back.activationQuant.count == (scheme == .fp16 ? 0 : model.quantizableActivations.count))
            var cmp = QuantComparison(reference: model, quantized: back, weightSQNR: qb.weightSQNR)
            try cmp.add(x, labels: [0, 1, 2, 3])
            let r = cmp.report
            #expect(r.layers.count == 5, "layers")
            #expect(r.layers.allSatisfy { $0.activationSQNR > (scheme == .fp16 ? 50 : 15) }, "\(scheme)")
            #expect(r.kl < 0.05)
            // The fused inference path applies the same activation grid as the tape forward.
            let a = try back.predict(x)
            let b = try InferencePlan(back).run(x)
            for i in 0..<a.count { #expect(abs(a[i] - b[i]) <= 2e-2 * (1 + abs(a[i]))) }
        }
    }
}
