import CZlib
import Glibc
import KDBundle
import KDData
import KDNN
import KDTensor

@testable import KDInference

enum Paths {
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()
    static let local = root + "/data"

    static func temp(_ name: String) -> String {
        let dir = "/tmp/kdtool-infer-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(dir, 0o755)
        let path = dir + "/" + name
        mkdir(path, 0o755)
        return path
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let f = fopen(path, "wb")!
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}

/// A PNG written byte by byte (so the tests can produce what libpng's simple writer cannot:
/// 16-bit samples, palettes, Adam7 interlacing).
enum PNGWriter {
    /// `sample(x, y, c)` gives each sample (0…255 for 8-bit, 0…65535 for 16-bit, palette index for type 3).
    static func encode(
        width: Int, height: Int, colorType: UInt8, bitDepth: UInt8, interlaced: Bool, palette: [[UInt8]] = [],
        sample: (Int, Int, Int) -> Int
    ) -> [UInt8] {
        let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][Int(colorType)]!
        var raw: [UInt8] = []
        let passes: [(Int, Int, Int, Int)] =
            interlaced
            ? [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] : [(0, 0, 1, 1)]
        for (x0, y0, dx, dy) in passes {
            guard x0 < width, y0 < height else { continue }
            for y in stride(from: y0, to: height, by: dy) {
                raw.append(0)  // filter: none
                for x in stride(from: x0, to: width, by: dx) {
                    for c in 0..<channels {
                        let v = sample(x, y, c)
                        if bitDepth == 16 { raw += [UInt8(v >> 8), UInt8(v & 0xff)] } else { raw.append(UInt8(v)) }
                    }
                }
            }
        }
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func chunk(_ type: String, _ data: [UInt8]) {
            let body = Array(type.utf8) + data
            out += be32(UInt32(data.count)) + body
            out += be32(UInt32(body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) }))
        }
        chunk("IHDR", be32(UInt32(width)) + be32(UInt32(height)) + [bitDepth, colorType, 0, 0, interlaced ? 1 : 0])
        if colorType == 3 { chunk("PLTE", palette.flatMap { $0 }) }
        var len = compressBound(uLong(raw.count))
        var z = [UInt8](repeating: 0, count: Int(len))
        _ = raw.withUnsafeBufferPointer { r in
            z.withUnsafeMutableBufferPointer { compress2($0.baseAddress, &len, r.baseAddress, uLong(r.count), 6) }
        }
        chunk("IDAT", Array(z[0..<Int(len)]))
        chunk("IEND", [])
        return out
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
}

/// Inserts an EXIF APP1 segment with the given orientation right after a JPEG's SOI marker.
func withOrientation(_ jpeg: [UInt8], _ orientation: UInt16) -> [UInt8] {
    let tiff: [UInt8] =
        Array("MM".utf8) + [
            0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, UInt8(orientation >> 8), UInt8(orientation & 0xff), 0, 0, 0, 0, 0, 0,
        ]
    let payload = Array("Exif".utf8) + [0, 0] + tiff
    let n = payload.count + 2
    return Array(jpeg[0..<2]) + [0xFF, 0xE1, UInt8(n >> 8), UInt8(n & 0xff)] + payload + Array(jpeg[2...])
}

/// A small untrained classifier over 1×8×8 inputs: what matters here is the decode path.
func tinyModel(invert: Bool = false) throws -> Model {
    var a = Architecture(.mlp)
    a.hidden = [16]
    let m = try a.build(input: [1, 8, 8], classes: 10, seed: 4)
    m.labels = Labels((0..<10).map { "digit\($0)" })
    m.preprocessing = Preprocessing(channels: 1, height: 8, width: 8, invert: invert)
    return m
}

/// A valid PNG signature and IHDR claiming `width`×`height` (correct CRC), with no pixel data:
/// the decompression-bomb case, refused before any allocation.
func pngHeaderClaiming(width: Int, height: Int) -> [UInt8] {
    let ihdr = Array("IHDR".utf8) + PNGWriter.be32(UInt32(width)) + PNGWriter.be32(UInt32(height)) + [8, 0, 0, 0, 0]
    let crc = ihdr.withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) }
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + PNGWriter.be32(13) + ihdr + PNGWriter.be32(UInt32(crc))
}
