import Glibc
import KDBundle
import KDData
import KDNN
import KDTensor
import KDTestSupport
import Testing

@testable import KDInference

@Suite("Batch inference")
struct PredictorTests {
    func run(_ model: Model, _ paths: [String], threads: Int = 2, batch: Int = 4, topK: Int = 3) throws -> [Prediction] {
        var o = Predictor.Options()
        o.threads = threads
        o.batchSize = batch
        o.topK = topK
        var out: [Prediction] = []
        try Predictor(model: model, options: o).run(paths) {
            out.append($0)
            return true
        }
        return out
    }

    /// Every PNG and JPEG variant the issue lists, written here.
    static func variants(in dir: String) throws -> [String: [UInt8]] {
        let gray8 = { (x: Int, y: Int, _: Int) in (x * 20 + y * 9) % 256 }
        let gray16 = { (x: Int, y: Int, _: Int) in (x * 5000 + y * 700) % 65536 }
        let rgb = { (x: Int, y: Int, c: Int) in (x * 17 + y * 11 + c * 60) % 256 }
        var v: [String: [UInt8]] = [:]
        v["gray8.png"] = PNGWriter.encode(width: 12, height: 10, colorType: 0, bitDepth: 8, interlaced: false, sample: gray8)
        v["gray16.png"] = PNGWriter.encode(width: 12, height: 10, colorType: 0, bitDepth: 16, interlaced: false, sample: gray16)
        v["gray-alpha.png"] = PNGWriter.encode(width: 9, height: 9, colorType: 4, bitDepth: 8, interlaced: false) { x, y, c in
            c == 0 ? gray8(x, y, 0) : 128
        }
        v["rgb.png"] = PNGWriter.encode(width: 11, height: 7, colorType: 2, bitDepth: 8, interlaced: false, sample: rgb)
        v["rgb16.png"] = PNGWriter.encode(width: 11, height: 7, colorType: 2, bitDepth: 16, interlaced: false) { x, y, c in
            rgb(x, y, c) * 257
        }
        v["rgba.png"] = PNGWriter.encode(width: 8, height: 8, colorType: 6, bitDepth: 8, interlaced: false) { x, y, c in
            c == 3 ? x * 30 : rgb(x, y, c)
        }
        v["palette.png"] = PNGWriter.encode(
            width: 10, height: 10, colorType: 3, bitDepth: 8, interlaced: false,
            palette: [[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 255]]
        ) { x, y, _ in (x + y) % 4 }
        v["interlaced.png"] = PNGWriter.encode(width: 13, height: 11, colorType: 2, bitDepth: 8, interlaced: true, sample: rgb)
        let photo = Image(width: 16, height: 12, channels: 3, pixels: (0..<(16 * 12 * 3)).map { UInt8(($0 * 7) % 256) })
        let grayPhoto = Image(width: 16, height: 12, channels: 1, pixels: (0..<(16 * 12)).map { UInt8(($0 * 5) % 256) })
        let cmyk = Image(width: 16, height: 12, channels: 4, pixels: (0..<(16 * 12 * 4)).map { UInt8(($0 * 3) % 256) })
        v["baseline.jpg"] = try ImageDecoder.encodeJPEG(photo)
        v["progressive.jpg"] = try ImageDecoder.encodeJPEG(photo, progressive: true)
        v["grayscale.jpg"] = try ImageDecoder.encodeJPEG(grayPhoto)
        v["cmyk.jpg"] = try ImageDecoder.encodeJPEG(cmyk)
        v["exif-rotated.jpg"] = withOrientation(try ImageDecoder.encodeJPEG(photo), 6)
        v["no-extension"] = try ImageDecoder.encodePNG(grayPhoto)
        for (name, bytes) in v { writeFile(dir + "/" + name, bytes) }
        return v
    }

    @Test("every PNG and JPEG variant decodes and is classified")
    func variants() throws {
        let dir = Paths.temp("variants")
        let v = try Self.variants(in: dir)
        let files = try ImageFolder.files(in: dir)
        #expect(files.count == v.count)
        let preds = try run(try tinyModel(), files)
        for p in preds {
            #expect(p.error == nil, "\(p.path): \(p.error?.description ?? "")")
            #expect(p.top.count == 3)
            #expect(p.top[0].probability >= p.top[1].probability)
        }
        let rotated = try ImageDecoder.decode(file: dir + "/exif-rotated.jpg")
        #expect(rotated.width == 12 && rotated.height == 16, "EXIF orientation 6 turns 16×12 into 12×16")
        #expect(try ImageDecoder.decode(file: dir + "/gray16.png").channels == 1)
        #expect(try ImageDecoder.decode(file: dir + "/palette.png").channels == 3)
        #expect(try ImageDecoder.decode(file: dir + "/cmyk.jpg").channels == 3)
    }

    @Test("bad files get error rows and the run goes on; order and results do not depend on threads")
    func hostileFolder() throws {
        let dir = Paths.temp("hostile")
        _ = try Self.variants(in: dir)
        let png = try ImageDecoder.encodePNG(Image(width: 30, height: 30, channels: 1, pixels: Array(repeating: 9, count: 900)))
        let jpg = try ImageDecoder.encodeJPEG(Image(width: 30, height: 30, channels: 3, pixels: Array(repeating: 90, count: 2700)))
        writeFile(dir + "/truncated.png", Array(png.prefix(png.count / 2)))
        writeFile(dir + "/truncated.jpg", Array(jpg.prefix(jpg.count / 2)))
        writeFile(dir + "/empty.png", [])
        writeFile(dir + "/notes.txt", Array("not an image".utf8))
        writeFile(dir + "/bomb.png", pngHeaderClaiming(width: 100_000, height: 100_000))
        symlink(dir, dir + "/loop")  // a symlink loop back to the folder itself
        symlink(dir + "/missing.png", dir + "/dangling.png")  // unreadable: points nowhere
        for name in ["multipage.tif", "no_time_for_that_tiny.gif", "camera.png", "china.jpg"] {
            symlink(try TestData.imageFolder() + "/" + name, dir + "/shipped-" + name)
        }
        let files = try ImageFolder.files(in: dir)
        let one = try run(try tinyModel(), files, threads: 1, batch: 5)
        let two = try run(try tinyModel(), files, threads: 2, batch: 5)
        #expect(one.map(\.path) == files && two.map(\.path) == files, "rows come in input order")
        for (a, b) in zip(one, two) {
            #expect(a.top.map(\.index) == b.top.map(\.index))
            #expect(a.top.map(\.probability) == b.top.map(\.probability), "identical results for 1 and 2 threads")
            #expect(a.error?.kind == b.error?.kind)
        }
        func kind(_ suffix: String) -> String? { one.first { $0.path.hasSuffix(suffix) }?.error?.kind }
        #expect(kind("/truncated.png") == "corrupt")
        #expect(kind("/truncated.jpg") == "corrupt")
        #expect(kind("/empty.png") == "corrupt")
        #expect(kind("/notes.txt") == "unsupported")
        #expect(kind("/bomb.png") == "too-large")
        #expect(kind("/dangling.png") == "unreadable")
        #expect(kind("shipped-multipage.tif") == "unsupported")
        #expect(kind("shipped-no_time_for_that_tiny.gif") == "unsupported")
        #expect(kind("shipped-camera.png") == nil && kind("shipped-china.jpg") == nil)
        #expect(!files.contains { $0.contains("/loop/loop/") }, "the loop is entered at most once")
    }

    struct SourceFailed: Error {}

    @Test("false from deliver stops the run there; progress counts whole batches; a failing path source is thrown")
    func stopAndFail() throws {
        let dir = Paths.temp("stop")
        let paths = (0..<30).map { i in
            let path = dir + "/\(i).png"
            let image = Image(width: 8, height: 8, channels: 1, pixels: Array(repeating: UInt8(i * 8), count: 64))
            writeFile(path, try! ImageDecoder.encodePNG(image))
            return path
        }
        var o = Predictor.Options()
        o.batchSize = 4
        o.threads = 2
        let predictor = try Predictor(model: try tinyModel(), options: o)
        var seen: [String] = []
        var counts: [Int] = []
        try predictor.run(
            paths,
            deliver: {
                seen.append($0.path)
                return seen.count < 7
            }, progress: { counts.append($0) })
        #expect(seen == Array(paths.prefix(7)), "rows in order, none after the stop")
        #expect(counts == [4], "the stopped batch is not counted")
        counts = []
        seen = []
        try predictor.run(paths, deliver: { seen.append($0.path) == () }, progress: { counts.append($0) })
        #expect(seen == paths)
        #expect(counts == [4, 8, 12, 16, 20, 24, 28, 30])
        var pulled = 0
        seen = []
        #expect(throws: SourceFailed.self) {
            try predictor.run(
                next: {
                    pulled += 1
                    if pulled == 10 { throw SourceFailed() }
                    return paths[pulled - 1]
                }, deliver: { seen.append($0.path) == () })
        }
        #expect(seen == Array(paths.prefix(seen.count)) && seen.count <= 8, "only whole batches before the failure")
    }

    @Test("inputs stream in the listing's order: nested folders, a loop, files and stdin mixed; the count matches")
    func streamedInputs() throws {
        let dir = Paths.temp("stream")
        for sub in ["b", "a", "a/z", "c"] { mkdir(dir + "/" + sub, 0o755) }
        for f in ["b/2.png", "b/1.png", "a/z/9.png", "a/3.png", "c/0.png", "top.png", ".hidden.png"] { writeFile(dir + "/" + f, [1]) }
        symlink(dir + "/a", dir + "/a/z/up")  // back to an ancestor: entered once, via a's own walk
        let listed = try ImageFolder.files(in: dir)
        #expect(listed.map { String($0.dropFirst(dir.count + 1)) } == ["a/3.png", "a/z/9.png", "b/1.png", "b/2.png", "c/0.png", "top.png"])
        var stdin = ["  /elsewhere/x.png ", "", "/elsewhere/y.jpg"].makeIterator()
        let args = [dir + "/b", "-", dir + "/top.png", dir]
        var list = InputList(args, recursive: true) { stdin.next() }
        var streamed: [String] = []
        while let p = try list.next() { streamed.append(p) }
        #expect(streamed == [dir + "/b/1.png", dir + "/b/2.png", "/elsewhere/x.png", "/elsewhere/y.jpg", dir + "/top.png"] + listed)
        #expect(try InputList.count(args, recursive: true) == nil, "stdin cannot be counted ahead")
        #expect(try InputList.count([dir, dir + "/top.png"], recursive: true) == listed.count + 1)
        #expect(try InputList.count([dir], recursive: false) == 1)
        #expect(try InputList.count([dir + "/missing.png"], recursive: true) == 1, "a missing file is a row of its own")
    }

    @Test("infer on image files matches eval on the same data (one decode path)")
    func samePathAsDataset() throws {
        let digits = try DataSource.load(Paths.local + "/digits/digits.csv.gz", .init(split: .eval))
        let dir = Paths.temp("digits")
        var files: [String] = []
        for i in 0..<40 {
            let img = Image(width: 8, height: 8, channels: 1, pixels: Array(digits.pixels[(i * 64)..<((i + 1) * 64)]))
            let path = dir + "/\(String(1000 + i)).png"
            writeFile(path, try ImageDecoder.encodePNG(img))
            files.append(path)
        }
        let model = try tinyModel()
        let preds = try run(model, files, topK: 1)
        let probs = try model.probabilities(
            Batcher(
                digits.range(0..<40, split: "x"), batchSize: 40, shuffle: false,
                normalization: .init(scale: 1.0 / 255, mean: [0], std: [1]), seed: 0
            )
            .batch(epoch: 0, index: 0).inputs)
        for (i, p) in preds.enumerated() {
            let row = (0..<10).map { probs[i * 10 + $0] }
            #expect(p.top[0].index == row.firstIndex(of: row.max()!)!)
            #expect(abs(p.top[0].probability - row.max()!) < 1e-6)
        }
    }

    @Test("PREP.invert turns dark-on-light images around before they reach the model")
    func inversion() throws {
        let dir = Paths.temp("invert")
        let light = Image(width: 8, height: 8, channels: 1, pixels: (0..<64).map { UInt8(255 - ($0 * 3) % 200) })
        let dark = Image(width: 8, height: 8, channels: 1, pixels: light.pixels.map { 255 - $0 })
        writeFile(dir + "/light.png", try ImageDecoder.encodePNG(light))
        writeFile(dir + "/dark.png", try ImageDecoder.encodePNG(dark))
        let inverted = try run(try tinyModel(invert: true), [dir + "/light.png"])
        let plain = try run(try tinyModel(invert: false), [dir + "/dark.png"])
        #expect(inverted[0].top.map(\.index) == plain[0].top.map(\.index))
        #expect(inverted[0].top.map(\.probability) == plain[0].top.map(\.probability))
    }
}
