import CArchive
import Foundation
import KDData

#if canImport(Glibc)
    import Glibc
#endif

/// Test data that every clone has: the committed `data/` folder, and fixtures the tests write
/// themselves (an image folder shaped like `../shared/data/images`, a CIFAR-format tarball), so
/// `./tools/test` needs nothing beside the clone. `../shared/data` is only read by tests that say
/// so in their traits (`TestData.sharedImages`), and they show as skipped where it is missing.
public enum TestData {
    /// The repository's root (this file is `Tests/Support/Fixtures.swift`).
    public static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    public static let mnist = root + "/data/mnist"
    public static let digits = root + "/data/digits/digits.csv.gz"

    /// The shared photos beside the clone, when they are there (nil otherwise).
    public static let sharedImages: String? = {
        let path = root + "/../shared/data/images"
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue ? path : nil
    }()

    /// The 14 names of the generated image folder, in sorted order: PNG in every channel layout,
    /// baseline, progressive and gray JPEG, and two formats kdtool refuses (TIFF and GIF).
    public static let imageNames = [
        "astronaut.png", "camera.png", "chelsea.png", "chessboard_GRAY.png", "china.jpg", "coffee.png", "flower.jpg", "horse.png",
        "hubble_deep_field.jpg", "logo.png", "multipage.tif", "no_time_for_that_tiny.gif", "retina.jpg", "rocket.jpg",
    ]

    private static let lock = NSLock()
    nonisolated(unsafe) private static var made: [String: String] = [:]

    /// Writes (once per process) a folder of small images with the same names and kinds as the
    /// shared photos, and returns its path.
    public static func imageFolder() throws -> String {
        try once("images") { dir in
            for name in imageNames {
                let bytes: [UInt8]
                switch name {
                case "multipage.tif":
                    // A little-endian TIFF header and one empty IFD: sniffed as TIFF, refused as unsupported.
                    bytes = [0x49, 0x49, 0x2A, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
                case "no_time_for_that_tiny.gif":
                    bytes =
                        Array("GIF89a".utf8) + [
                            1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255, 0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 1, 0, 0x3B,
                        ]
                default:
                    let (w, h, c, kind) = layout(name)
                    let img = picture(width: w, height: h, channels: c, seed: name.utf8.reduce(0) { $0 &* 31 &+ Int($1) })
                    switch kind {
                    case "png": bytes = try ImageDecoder.encodePNG(img)
                    case "progressive": bytes = try ImageDecoder.encodeJPEG(img, quality: 85, progressive: true)
                    default: bytes = try ImageDecoder.encodeJPEG(img, quality: 90)
                    }
                }
                try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
            }
        }
    }

    /// Width, height, channels and encoding of each generated image.
    static func layout(_ name: String) -> (Int, Int, Int, String) {
        switch name {
        case "astronaut.png": return (64, 48, 3, "png")
        case "camera.png": return (48, 48, 1, "png")
        case "chelsea.png": return (40, 30, 3, "png")
        case "chessboard_GRAY.png": return (16, 16, 1, "png")
        case "china.jpg": return (64, 48, 3, "jpeg")
        case "coffee.png": return (40, 30, 4, "png")
        case "flower.jpg": return (48, 32, 3, "progressive")
        case "horse.png": return (32, 24, 2, "png")
        case "hubble_deep_field.jpg": return (40, 40, 1, "jpeg")
        case "logo.png": return (50, 20, 4, "png")
        case "retina.jpg": return (48, 48, 3, "jpeg")
        default: return (32, 48, 3, "progressive")  // rocket.jpg
        }
    }

    /// A smooth picture with a few shapes, different for each seed (JPEG-friendly, not noise).
    public static func picture(width: Int, height: Int, channels: Int, seed: Int) -> Image {
        var px = [UInt8](repeating: 0, count: width * height * channels)
        let cx = Double(abs(seed) % width)
        let cy = Double(abs(seed / 7) % height)
        for y in 0..<height {
            for x in 0..<width {
                let d = ((Double(x) - cx) * (Double(x) - cx) + (Double(y) - cy) * (Double(y) - cy)).squareRoot()
                for c in 0..<channels {
                    let v = c == 3 ? 255 - (x * 2) % 256 : Int(128 + 100 * sin(d / Double(4 + c) + Double(seed % 5)))
                    px[(y * width + x) * channels + c] = UInt8(clamping: v)
                }
            }
        }
        return Image(width: width, height: height, channels: channels, pixels: px)
    }

    /// Class names of the generated CIFAR tarball, as `batches.meta.txt` lists them.
    public static let cifarClasses = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// Writes (once per process) a CIFAR-10-format `.tar.gz` — `cifar-10-batches-bin/` with
    /// `data_batch_1`, `data_batch_2`, `test_batch` and `batches.meta.txt` — whose images are
    /// learnable: each class is a bright square at its own place on a noisy background. Returns
    /// its path; `trainCount` images per class split over the two train batches, `testCount` in the test batch.
    public static func cifarTarball(trainPerClass: Int = 20, testPerClass: Int = 5) throws -> String {
        try once("cifar-\(trainPerClass)-\(testPerClass)") { dir in
            var rng = UInt64(0x9E37_79B9_7F4A_7C15)
            func next() -> UInt8 {
                rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: rng >> 56)
            }
            func records(_ perClass: Int) -> [UInt8] {
                var out: [UInt8] = []
                for i in 0..<perClass * 10 {
                    let label = i % 10
                    out.append(UInt8(label))
                    let (sx, sy) = ((label % 5) * 6 + 1, (label / 5) * 16 + 4)
                    for c in 0..<3 {
                        for y in 0..<32 {
                            for x in 0..<32 {
                                let inside = x >= sx && x < sx + 6 && y >= sy && y < sy + 10
                                out.append(inside ? 200 &+ next() / 8 &+ UInt8(c * 10) : next() / 3)
                            }
                        }
                    }
                }
                return out
            }
            let half = trainPerClass / 2
            let members: [(String, [UInt8])] = [
                ("cifar-10-batches-bin/batches.meta.txt", Array((cifarClasses.joined(separator: "\n") + "\n").utf8)),
                ("cifar-10-batches-bin/data_batch_1", records(half)),
                ("cifar-10-batches-bin/data_batch_2", records(trainPerClass - half)),
                ("cifar-10-batches-bin/test_batch", records(testPerClass)),
            ]
            let path = dir + "/cifar-10-binary.tar.gz"
            guard let a = archive_write_new() else { throw FixtureError("libarchive unavailable") }
            defer { archive_write_free(a) }
            archive_write_add_filter_gzip(a)
            archive_write_set_format_ustar(a)
            guard archive_write_open_filename(a, path) == ARCHIVE_OK else { throw FixtureError("cannot write \(path)") }
            for (name, bytes) in members {
                let e = archive_entry_new()
                defer { archive_entry_free(e) }
                archive_entry_set_pathname(e, name)
                archive_entry_set_size(e, Int64(bytes.count))
                archive_entry_set_filetype(e, 0o100000)  // AE_IFREG, a regular file
                archive_entry_set_perm(e, 0o644)
                guard archive_write_header(a, e) == ARCHIVE_OK else { throw FixtureError("cannot write \(name)") }
                let n = bytes.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) }
                guard n == bytes.count else { throw FixtureError("short write of \(name)") }
            }
            guard archive_write_close(a) == ARCHIVE_OK else { throw FixtureError("cannot close \(path)") }
        } + "/cifar-10-binary.tar.gz"
    }

    /// Runs `make` in a fresh folder the first time `key` is asked for; later calls get the folder.
    static func once(_ key: String, _ make: (String) throws -> Void) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let dir = made[key] { return dir }
        let dir = NSTemporaryDirectory() + "kdtool-fixtures-\(getpid())-\(key)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try make(dir)
        made[key] = dir
        return dir
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
