import Foundation
import Testing

@testable import KDBundle

@Suite("Writer and reader")
struct WriterTests {
    @Test("what is written reads back identically, plain and deflated")
    func writeRead() throws {
        let dir = try temporaryDirectory()
        for deflate in [Set<String>(), Set(["TDIR", "GRPH", "PROV", "META", "LABL"])] {
            let c = sampleContents(deflate: deflate)
            let path = dir.appendingPathComponent("m.kdb").path
            let result = try BundleWriter.write(c, to: path)
            let b = try ModelBundle(path: path)
            try b.verify()
            #expect(try b.contents() == c)
            #expect(b.fileDigest == result.fileDigest)
            #expect(try b.contentDigest() == result.contentDigest)
            #expect(result.size == b.fileSize)
        }
    }

    @Test("tensor views are zero-copy and 64-byte aligned in the mapped file")
    func alignment() throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("m.kdb").path
        try BundleWriter.write(sampleContents(), to: path)
        let b = try ModelBundle(path: path)
        for i in b.tensors.indices where b.tensors[i].length > 0 {
            let p = Int(bitPattern: b.tensorData(at: i).baseAddress)
            #expect(p % 64 == 0)
        }
        let w = try b.floats(named: "fc2.bias")
        #expect(w == sampleContents().tensors[3].bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
    }

    @Test("quantized tensors dequantize per channel")
    func dequantize() throws {
        let b = try ModelBundle(bytes: BundleWriter.encode(sampleContents()))
        let q = try b.floats(named: "q.weight")
        let raw = sampleContents().tensors[4].bytes.map { Float(Int8(bitPattern: $0)) }
        let scales: [Float] = [0.1, 0.2, 0.3]
        let zps: [Float] = [0, 1, -1]
        for i in 0..<12 { #expect(q[i] == scales[i / 4] * (raw[i] - zps[i / 4])) }
        #expect(b.header.requiredFeatures & Format.requiredQuantized != 0)
    }

    @Test("the content digest ignores PROV, META and compression; the file digest does not")
    func contentDigest() throws {
        var a = sampleContents()
        var b = sampleContents(deflate: ["GRPH", "TDIR"])
        b.provenance?.metrics["accuracy"] = .float(0.5)
        b.metadata = Metadata(["other": .bool(false)])
        let ra = try ModelBundle(bytes: BundleWriter.encode(a))
        let rb = try ModelBundle(bytes: BundleWriter.encode(b))
        #expect(try ra.contentDigest() == rb.contentDigest())
        #expect(ra.fileDigest != rb.fileDigest)
        a.tensors[0].bytes[0] ^= 1
        #expect(try ModelBundle(bytes: BundleWriter.encode(a)).contentDigest() != ra.contentDigest())
    }

    @Test("a writer killed mid-write leaves the previous file intact; the next write clears its temporary")
    func crashSafety() throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("model.kdb").path
        let first = try BundleWriter.write(sampleContents(seed: 1), to: path)
        // A pid far above pid_max stands for a process that no longer exists.
        #expect(throws: BundleWriter.SimulatedCrash.self) {
            try BundleWriter.write(sampleContents(seed: 2), to: path, crashAfterBytes: 5000, pid: 99_999_999)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.count == 1, "the simulated crash leaves a partial temporary file")
        let survivor = try ModelBundle(path: path)
        try survivor.verify()
        #expect(survivor.fileDigest == first.fileDigest)

        try BundleWriter.write(sampleContents(seed: 3), to: path)
        let after = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(after == ["model.kdb"], "stale temporaries are removed by the next successful write: \(after)")
    }

    @Test("an invalid bundle is refused before anything is written")
    func refusesInvalid() throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("model.kdb").path
        let good = try BundleWriter.write(sampleContents(), to: path)
        var bad = sampleContents()
        bad.tensors.append(bad.tensors[0])
        #expect(throws: BundleError.self) { try BundleWriter.write(bad, to: path) }
        var nan = sampleContents()
        nan.tensors[0] = .init(name: "fc1.weight", shape: [16, 64], floats: [Float.nan] + [Float](repeating: 0, count: 1023))
        let e = #expect(throws: BundleError.self) { try BundleWriter.write(nan, to: path) }
        #expect(e?.code == .nonFinite)
        var cycle = sampleContents()
        cycle.graph?.nodes[0].inputs[0] = "logits"
        #expect(throws: BundleError.self) { try BundleWriter.write(cycle, to: path) }
        #expect(try ModelBundle(path: path).fileDigest == good.fileDigest)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.kdb"])
    }

    @Test("an unknown non-critical section survives a rewrite; an unknown critical one is refused")
    func unknownSections() throws {
        var c = sampleContents()
        c.unknownSections = [.init(fourcc: "XTRA", deflated: false, length: 3, stored: [1, 2, 3])]
        let bytes = try BundleWriter.encode(c)
        let b = try ModelBundle(bytes: bytes)
        try b.verify()
        #expect(try BundleWriter.encode(b.contents()) == bytes)
    }

    @Test("open reads only the header, directory and tensor table")
    func lazyOpen() throws {
        // A broken GRPH does not stop opening or reading tensors; it fails when the graph is asked for.
        var bytes = try BundleWriter.encode(sampleContents())
        let b0 = try ModelBundle(bytes: bytes)
        let grph = try #require(b0.entry("GRPH"))
        bytes[grph.offset + 3] ^= 0xff
        let b = try ModelBundle(bytes: bytes)
        #expect(try b.floats(named: "fc1.bias").count == 16)
        let e = #expect(throws: BundleError.self) { try b.graph() }
        #expect(e?.code == .sectionChecksum)
    }

    @Test("shape inference, parameters and FLOPs of the sample graph")
    func shapes() throws {
        let c = sampleContents()
        let shapes = Dictionary(uniqueKeysWithValues: c.tensors.map { ($0.name, $0.shape) })
        let stats = try c.graph!.stats(tensorShapes: shapes, batch: 4)
        #expect(stats.map(\.outputShape) == [[4, 16], [4, 16], [4, 10]])
        #expect(stats.map(\.parameters) == [16 * 64 + 16, 0, 160 + 10])
        #expect(stats[0].flops == 2 * 4 * 64 * 16)
    }

    @Test("graph validation names the problem")
    func graphErrors() {
        let base = sampleContents().graph!
        let names = Set(sampleContents().tensors.map(\.name))
        func code(_ edit: (inout Graph) -> Void) -> BundleErrorCode? {
            var g = base
            edit(&g)
            do {
                try g.validate(tensorNames: names)
                return nil
            } catch let e as BundleError { return e.code } catch { return nil }
        }
        #expect(code { _ in } == nil)
        #expect(code { $0.nodes[1].inputs = ["nowhere"] } == .missingTensor)
        #expect(code { $0.nodes[2].name = "fc1" } == .duplicateName)
        #expect(code { $0.nodes[1].outputs = ["h1"] } == .duplicateName)
        #expect(code { $0.nodes[0].inputs[0] = "logits" } == .graphCycle)
        #expect(code { $0.outputs = ["ghost"] } == .invalidGraph)
        #expect(code { $0.nodes[1].attrs["alpha"] = .float(0.1) } == .invalidGraph)
        #expect(
            code {
                $0.nodes.append(
                    .init(name: "c", op: .conv2d, inputs: ["a1", "fc1.weight"], outputs: ["c"], attrs: ["groups": .uint(1)]))
            } == .invalidGraph)
    }
}
