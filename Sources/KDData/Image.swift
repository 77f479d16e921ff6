import CImage
import CImageSupport
import KDIO

#if canImport(Glibc)
    import Glibc
#endif

/// A decoded image: 8-bit interleaved pixels with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels.
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Image formats recognised by their first bytes, never by extension.
public enum ImageFormat: String, Sendable {
    case png, jpeg, gif, tiff, bmp, webp, unknown

    public init(sniffing b: [UInt8]) {
        func starts(_ p: [UInt8]) -> Bool { b.count >= p.count && Array(b[0..<p.count]) == p }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            self = .png
        } else if starts([0xFF, 0xD8, 0xFF]) {
            self = .jpeg
        } else if starts(Array("GIF8".utf8)) {
            self = .gif
        } else if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) {
            self = .tiff
        } else if starts(Array("BM".utf8)) {
            self = .bmp
        } else if starts(Array("RIFF".utf8)) && b.count >= 12 && Array(b[8..<12]) == Array("WEBP".utf8) {
            self = .webp
        } else {
            self = .unknown
        }
    }
}

/// Why an image could not be used; `kind` is stable for scripts (`unsupported`, `corrupt`, `too-large`, `unreadable`).
public struct ImageError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var kind: String
    public var message: String

    public init(path: String, kind: String, message: String) {
        self.path = path
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

extension ImageError: KDError {
    public var errorCode: String { "image.\(kind)" }
    public var category: ErrorCategory { .invalidInput }
    public var file: String { path }
    public var cause: String { message }
}

/// PNG through libpng's simplified API, JPEG through libjpeg-turbo (with EXIF orientation applied).
public enum ImageDecoder {
    /// The pixel cap (`Caps.current.imagePixels`, 100 M), checked from the header before decoding.
    public static var defaultMaxPixels: Int { Caps.current.imagePixels }

    public static func decode(file path: String, maxPixels: Int = defaultMaxPixels) throws -> Image {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch let e as InputError {
            throw ImageError(path: path, kind: "unreadable", message: e.message)
        }
        return try decode(bytes, path: path, maxPixels: maxPixels)
    }

    public static func decode(_ bytes: [UInt8], path: String = "<memory>", maxPixels: Int = defaultMaxPixels) throws -> Image {
        if bytes.isEmpty { throw ImageError(path: path, kind: "corrupt", message: "empty file") }
        switch ImageFormat(sniffing: bytes) {
        case .png: return try png(bytes, path: path, maxPixels: maxPixels)
        case .jpeg: return try jpeg(bytes, path: path, maxPixels: maxPixels)
        case .unknown:
            throw ImageError(path: path, kind: "unsupported", message: "not an image format kdtool reads (PNG or JPEG)")
        case let other:
            throw ImageError(
                path: path, kind: "unsupported", message: "\(other.rawValue.uppercased()) images are not supported (PNG or JPEG)")
        }
    }

    /// The pixel count of a `width × height` header, checked against the cap (an `ImageError`).
    static func checkedPixels(_ w: Int, _ h: Int, _ format: String, path: String, maxPixels: Int) throws -> Int {
        do {
            return try Checked(path).product([w, h], "\(format) of \(w)×\(h) pixels", cap: maxPixels)
        } catch let e as InputError {
            throw ImageError(path: path, kind: "too-large", message: e.message)
        }
    }

    static func png(_ bytes: [UInt8], path: String, maxPixels: Int) throws -> Image {
        // The IHDR chunk always comes first: refuse bomb dimensions before libpng sees the file.
        if bytes.count >= 24 && Array(bytes[12..<16]) == Array("IHDR".utf8) {
            let be = { (i: Int) in Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]) }
            _ = try checkedPixels(be(16), be(20), "PNG", path: path, maxPixels: maxPixels)
        }
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let began = bytes.withUnsafeBytes { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        func message() -> String {
            withUnsafeBytes(of: image.message) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        guard began != 0 else { throw ImageError(path: path, kind: "corrupt", message: "invalid PNG: \(message())") }
        defer { png_image_free(&image) }
        let (w, h) = (Int(image.width), Int(image.height))
        guard w > 0, h > 0 else { throw ImageError(path: path, kind: "corrupt", message: "PNG of \(w)×\(h) pixels") }
        let count = try checkedPixels(w, h, "PNG", path: path, maxPixels: maxPixels)
        // Keep colour and alpha as the file has them; 16-bit, palette and interlacing are resolved by libpng.
        let hasColor = image.format & UInt32(PNG_FORMAT_FLAG_COLOR) != 0 || image.format & UInt32(PNG_FORMAT_FLAG_COLORMAP) != 0
        let hasAlpha = image.format & UInt32(PNG_FORMAT_FLAG_ALPHA) != 0
        let channels = (hasColor ? 3 : 1) + (hasAlpha ? 1 : 0)
        image.format = (hasColor ? UInt32(PNG_FORMAT_FLAG_COLOR) : 0) | (hasAlpha ? UInt32(PNG_FORMAT_FLAG_ALPHA) : 0)
        var pixels = [UInt8](repeating: 0, count: count * channels)
        let ok = pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard ok != 0 else { throw ImageError(path: path, kind: "corrupt", message: "corrupt PNG: \(message())") }
        // The simplified API reports damage it recovered from (a short IDAT stream, a bad CRC in
        // an ancillary chunk) as a warning in `image.warning_or_error`; a damaged image is an error.
        // Warnings about metadata (colour profiles, text chunks) are harmless and stay warnings.
        if image.warning_or_error & UInt32(PNG_IMAGE_WARNING) != 0 {
            let m = message().lowercased()
            if ["image data", "crc", "truncat", "decompress", "premature", "extra compressed"].contains(where: { m.contains($0) }) {
                throw ImageError(path: path, kind: "corrupt", message: "damaged PNG: \(message())")
            }
        }
        return Image(width: w, height: h, channels: channels, pixels: pixels)
    }

    static func jpeg(_ bytes: [UInt8], path: String, maxPixels: Int) throws -> Image {
        var out: UnsafeMutablePointer<UInt8>?
        var (w, h, c, orientation): (Int32, Int32, Int32, Int32) = (0, 0, 0, 1)
        var err = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer { b in
            kd_jpeg_decode(b.baseAddress, b.count, maxPixels, &out, &w, &h, &c, &orientation, &err, err.count)
        }
        let msg = err.withUnsafeBufferPointer { $0.baseAddress.map { String(cString: $0) } ?? "" }
        if rc == 2 || rc == 3 { throw ImageError(path: path, kind: "too-large", message: "JPEG: \(msg)") }
        guard rc == 0, let out else { throw ImageError(path: path, kind: "corrupt", message: "corrupt JPEG: \(msg)") }
        defer { free(out) }
        let count = try checkedPixels(Int(w), Int(h), "JPEG", path: path, maxPixels: maxPixels)
        let img = Image(
            width: Int(w), height: Int(h), channels: Int(c), pixels: Array(UnsafeBufferPointer(start: out, count: count * Int(c))))
        return img.oriented(Int(orientation))
    }

    /// A regular file's bytes (never a FIFO, device or folder), at most `Caps.current.fileBytes`.
    static func readFile(_ path: String) throws -> [UInt8] { try SafeFile.readAll(path) }

    /// Encodes a JPEG (for tests and for writing sample folders).
    public static func encodeJPEG(_ img: Image, quality: Int = 90, progressive: Bool = false) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = img.pixels.withUnsafeBufferPointer {
            kd_jpeg_encode(
                $0.baseAddress, Int32(img.width), Int32(img.height), Int32(img.channels), Int32(quality), progressive ? 1 : 0, &out, &size,
                &err, err.count)
        }
        guard rc == 0, let out else {
            throw DataError("JPEG encoding failed: \(err.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })")
        }
        defer { free(out) }
        return Array(UnsafeBufferPointer(start: out, count: Int(size)))
    }

    /// Encodes an 8-bit PNG (gray, gray+alpha, RGB or RGBA).
    public static func encodePNG(_ img: Image) throws -> [UInt8] {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(img.width)
        image.height = UInt32(img.height)
        image.format = UInt32([0, 0, 1, 2, 3][img.channels])
        var size: Int = 0
        let stride = Int32(img.width * img.channels)
        _ = img.pixels.withUnsafeBytes { png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, stride, nil) }
        var out = [UInt8](repeating: 0, count: size)
        let ok = out.withUnsafeMutableBytes { o in
            img.pixels.withUnsafeBytes { png_image_write_to_memory(&image, o.baseAddress, &size, 0, $0.baseAddress, stride, nil) }
        }
        guard ok != 0 else { throw DataError("PNG encoding failed") }
        return Array(out[0..<size])
    }
}

extension String {
    func replacingFirst(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }
}
