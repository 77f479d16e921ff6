import Glibc
import KDTestSupport
import Testing

@testable import KDData

@Suite("Images")
struct ImageTests {
    /// The generated folder (always there) and the shared photos (when they are beside the clone).
    static let generated: [String] = (try? ImageFolder.files(in: TestData.imageFolder())) ?? []
    static let shared: [String] = TestData.sharedImages.flatMap { try? ImageFolder.files(in: $0) } ?? []

    @Test("the generated image folder holds all 14 files")
    func generatedFolder() {
        #expect(Self.generated.count == 14)
    }

    @Test("the shared photos decode; GIF and TIFF are reported unsupported", .enabled(if: TestData.sharedImages != nil), arguments: shared)
    func sharedImages(path: String) throws {
        try shippedImages(path: path)
    }

    func gradient(_ w: Int, _ h: Int, channels: Int) -> Image {
        var px: [UInt8] = []
        for y in 0..<h { for x in 0..<w { for c in 0..<channels { px.append(UInt8(clamping: x * 4 + y * 2 + c * 40)) } } }
        return Image(width: w, height: h, channels: channels, pixels: px)
    }

    @Test("every layout decodes; GIF and TIFF are reported unsupported", arguments: generated)
    func shippedImages(path: String) throws {
        let format = ImageFormat(sniffing: Array((try ImageDecoder.readFile(path)).prefix(16)))
        if format == .png || format == .jpeg {
            let img = try ImageDecoder.decode(file: path)
            #expect(img.width > 0 && img.height > 0 && [1, 2, 3, 4].contains(img.channels))
            #expect(img.pixels.count == img.width * img.height * img.channels)
        } else {
            let e = #expect(throws: ImageError.self) { try ImageDecoder.decode(file: path) }
            #expect(e?.kind == "unsupported")
        }
    }

    @Test("PNG round trip for gray, gray+alpha, RGB, RGBA", arguments: [1, 2, 3, 4])
    func pngRoundTrip(channels: Int) throws {
        let img = gradient(13, 7, channels: channels)
        #expect(try ImageDecoder.decode(ImageDecoder.encodePNG(img)) == img)
    }

    @Test("JPEG baseline and progressive, gray and RGB, decode close to the original")
    func jpeg() throws {
        for channels in [1, 3] {
            for progressive in [false, true] {
                let img = gradient(32, 24, channels: channels)
                let back = try ImageDecoder.decode(ImageDecoder.encodeJPEG(img, quality: 95, progressive: progressive))
                #expect(back.width == 32 && back.height == 24 && back.channels == channels)
                let err = zip(back.pixels, img.pixels).map { abs(Int($0) - Int($1)) }.reduce(0, +) / img.pixels.count
                #expect(err < 6, "mean abs error \(err)")
            }
        }
    }

    @Test("truncated, empty and hostile files give errors, not crashes")
    func hostile() throws {
        let png = try ImageDecoder.encodePNG(gradient(40, 40, channels: 3))
        #expect(throws: ImageError.self) { try ImageDecoder.decode(Array(png.prefix(png.count / 2))) }
        let jpg = try ImageDecoder.encodeJPEG(gradient(40, 40, channels: 3))
        #expect(throws: ImageError.self) { try ImageDecoder.decode(Array(jpg.prefix(jpg.count / 3))) }
        #expect(throws: ImageError.self) { try ImageDecoder.decode([]) }
        // A PNG header claiming 100000×100000 is refused before any pixel buffer exists.
        var huge = Array(png.prefix(33))
        huge.replaceSubrange(16..<24, with: [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0])
        let e = #expect(throws: ImageError.self) { try ImageDecoder.decode(huge) }
        #expect(e?.kind == "too-large")
    }

    @Test("conversions: luminance, alpha on white, resize keeps constants, EXIF orientations invert")
    func conversions() {
        let rgba = Image(width: 1, height: 1, channels: 4, pixels: [255, 0, 0, 0])
        #expect(rgba.converted(toChannels: 3, alpha: .white).pixels == [255, 255, 255])
        #expect(rgba.converted(toChannels: 3, alpha: .drop).pixels == [255, 0, 0])
        #expect(Image(width: 1, height: 1, channels: 3, pixels: [0, 255, 0]).converted(toChannels: 1, alpha: .white).pixels == [150])
        let flat = Image(width: 50, height: 30, channels: 1, pixels: Array(repeating: 77, count: 1500))
        #expect(flat.resized(width: 7, height: 5).pixels.allSatisfy { $0 == 77 })
        #expect(flat.resized(width: 120, height: 90).pixels.allSatisfy { $0 == 77 })
        let img = gradient(5, 3, channels: 1)
        #expect(img.oriented(6).oriented(8) == img)
        #expect(img.oriented(3).oriented(3) == img)
        #expect(img.oriented(6).width == 3)
    }

    @Test("an image folder becomes a dataset with class names from its subfolders")
    func folder() throws {
        let dir = Paths.temp("folder")
        mkdir(dir, 0o755)
        for (k, name) in ["cat", "dog"].enumerated() {
            mkdir(dir + "/" + name, 0o755)
            for i in 0..<3 {
                let img = gradient(20 + i, 16, channels: k == 0 ? 3 : 1)
                let bytes = i == 0 ? try ImageDecoder.encodeJPEG(img) : try ImageDecoder.encodePNG(img)
                writeFile(dir + "/\(name)/\(i).img", bytes)
            }
        }
        let d = try DataSource.load(dir, .init(split: .all, imageShape: [1, 8, 8]))
        #expect(d.classes == ["cat", "dog"])
        #expect(d.count == 6 && d.labels == [0, 0, 0, 1, 1, 1])
        #expect(d.shape == [1, 8, 8])
    }
}
