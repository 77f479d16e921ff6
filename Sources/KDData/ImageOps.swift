/// Geometry and colour conversions applied before an image becomes a network input.
extension Image {
    /// Applies an EXIF orientation (1–8) so the pixels are upright.
    public func oriented(_ orientation: Int) -> Image {
        guard (2...8).contains(orientation) else { return self }
        let transposed = orientation >= 5
        let (ow, oh) = transposed ? (height, width) : (width, height)
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<oh {
            for x in 0..<ow {
                // Source coordinates for each destination pixel, per the EXIF definitions.
                let (sx, sy): (Int, Int)
                switch orientation {
                case 2: (sx, sy) = (width - 1 - x, y)
                case 3: (sx, sy) = (width - 1 - x, height - 1 - y)
                case 4: (sx, sy) = (x, height - 1 - y)
                case 5: (sx, sy) = (y, x)
                case 6: (sx, sy) = (y, height - 1 - x)
                case 7: (sx, sy) = (width - 1 - y, height - 1 - x)
                default: (sx, sy) = (width - 1 - y, x)
                }
                for c in 0..<channels { out[(y * ow + x) * channels + c] = pixels[(sy * width + sx) * channels + c] }
            }
        }
        return Image(width: ow, height: oh, channels: channels, pixels: out)
    }

    public enum AlphaPolicy: Sendable { case white, black, drop }

    /// Converts to 1 (luminance, ITU-R 601) or 3 channels, compositing alpha over white or black or
    /// dropping it.
    public func converted(toChannels target: Int, alpha: AlphaPolicy) -> Image {
        let hasAlpha = channels == 2 || channels == 4
        let color = channels >= 3
        if channels == target { return self }
        let bg: Float = alpha == .black ? 0 : 255
        var out = [UInt8](repeating: 0, count: width * height * target)
        for p in 0..<(width * height) {
            let s = p * channels
            var rgb: (Float, Float, Float)
            if color {
                rgb = (Float(pixels[s]), Float(pixels[s + 1]), Float(pixels[s + 2]))
            } else {
                let g = Float(pixels[s])
                rgb = (g, g, g)
            }
            if hasAlpha && alpha != .drop {
                let a = Float(pixels[s + channels - 1]) / 255
                rgb = (rgb.0 * a + bg * (1 - a), rgb.1 * a + bg * (1 - a), rgb.2 * a + bg * (1 - a))
            }
            if target == 1 {
                out[p] = UInt8(clamping: Int((0.299 * rgb.0 + 0.587 * rgb.1 + 0.114 * rgb.2).rounded()))
            } else {
                out[p * 3] = UInt8(clamping: Int(rgb.0.rounded()))
                out[p * 3 + 1] = UInt8(clamping: Int(rgb.1.rounded()))
                out[p * 3 + 2] = UInt8(clamping: Int(rgb.2.rounded()))
            }
        }
        return Image(width: width, height: height, channels: target, pixels: out)
    }

    /// Bilinear resampling; when shrinking, the triangle filter widens with the scale factor so
    /// every source pixel contributes (antialiasing, as PIL's bilinear does).
    public func resized(width ow: Int, height oh: Int) -> Image {
        if ow == width && oh == height { return self }
        let horizontal = Image.weights(from: width, to: ow)
        let vertical = Image.weights(from: height, to: oh)
        var tmp = [Float](repeating: 0, count: ow * height * channels)
        for y in 0..<height {
            for x in 0..<ow {
                let (start, ws) = horizontal[x]
                for c in 0..<channels {
                    var acc: Float = 0
                    for (k, w) in ws.enumerated() { acc += w * Float(pixels[(y * width + start + k) * channels + c]) }
                    tmp[(y * ow + x) * channels + c] = acc
                }
            }
        }
        var out = [UInt8](repeating: 0, count: ow * oh * channels)
        for y in 0..<oh {
            let (start, ws) = vertical[y]
            for x in 0..<ow {
                for c in 0..<channels {
                    var acc: Float = 0
                    for (k, w) in ws.enumerated() { acc += w * tmp[((start + k) * ow + x) * channels + c] }
                    out[(y * ow + x) * channels + c] = UInt8(clamping: Int(acc.rounded()))
                }
            }
        }
        return Image(width: ow, height: oh, channels: channels, pixels: out)
    }

    /// For each output index: first source index and normalised weights.
    static func weights(from n: Int, to m: Int) -> [(Int, [Float])] {
        let scale = Float(n) / Float(m)
        let support = max(scale, 1)
        return (0..<m).map { i in
            let center = (Float(i) + 0.5) * scale
            let lo = max(0, Int((center - support).rounded(.down)))
            let hi = min(n - 1, Int((center + support).rounded(.up)))
            var ws: [Float] = []
            for j in lo...hi {
                let d = abs((Float(j) + 0.5 - center) / support)
                ws.append(max(0, 1 - d))
            }
            let total = ws.reduce(0, +)
            if total <= 0 {
                let nearest = min(n - 1, max(0, Int(center)))
                return (nearest, [1])
            }
            return (lo, ws.map { $0 / total })
        }
    }

    /// Shorter side to the target's, then a center crop.
    public func resizedShorterSideCrop(width ow: Int, height oh: Int) -> Image {
        let scale = max(Double(ow) / Double(width), Double(oh) / Double(height))
        let rw = max(ow, Int((Double(width) * scale).rounded()))
        let rh = max(oh, Int((Double(height) * scale).rounded()))
        let r = resized(width: rw, height: rh)
        let x0 = (rw - ow) / 2
        let y0 = (rh - oh) / 2
        var out = [UInt8](repeating: 0, count: ow * oh * channels)
        for y in 0..<oh {
            for x in 0..<ow {
                for c in 0..<channels { out[(y * ow + x) * channels + c] = r.pixels[((y + y0) * rw + x + x0) * channels + c] }
            }
        }
        return Image(width: ow, height: oh, channels: channels, pixels: out)
    }

    /// Planar CHW bytes (what datasets and the network use) from interleaved HWC.
    public var planar: [UInt8] {
        var out = [UInt8](repeating: 0, count: pixels.count)
        let hw = width * height
        for p in 0..<hw { for c in 0..<channels { out[c * hw + p] = pixels[p * channels + c] } }
        return out
    }
}
