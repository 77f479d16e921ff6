// libFuzzer entry point for the image decoders (PNG through libpng, JPEG through libjpeg-turbo with
// EXIF orientation) and the conversion and resizing every decoded image goes through.
// Built by tools/fuzz-parsers.
import KDData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let image = try? ImageDecoder.decode(bytes, path: "fuzz", maxPixels: 1 << 22) else { return 0 }
    _ = ImageFolder.prepare(image, shape: [3, 16, 16], alpha: .white, resize: .shorterSideCrop)
    _ = ImageFolder.prepare(image, shape: [1, 7, 5], alpha: .white, resize: .stretch, invert: true)
    return 0
}
