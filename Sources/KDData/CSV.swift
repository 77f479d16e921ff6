/// Numeric CSV (optionally gzipped): each row holds the pixel values then the label, e.g. the
/// 8×8 digits (64 values 0–16, then the class).
public enum CSVData {
    public static func load(_ path: String, side: Int? = nil) throws -> Dataset {
        let bytes = try Gzip.read(path)
        var pixels: [UInt8] = []
        var labels: [Int] = []
        var width: Int?
        var maxValue = 0
        var row = 0
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            row += 1
            let fields = line.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map {
                String(decoding: $0, as: UTF8.self).trimmingCharacters(in: " \r\t")
            }
            if width == nil { width = fields.count }
            guard fields.count == width, fields.count >= 2 else {
                throw DataError("\(path): row \(row) has \(fields.count) fields, expected \(width ?? 0)")
            }
            for (i, f) in fields.enumerated() {
                guard let v = Double(f), v >= 0, v <= 255, v == v.rounded() else {
                    throw DataError("\(path): row \(row), field \(i + 1): '\(f)' is not an integer 0…255")
                }
                if i == fields.count - 1 { labels.append(Int(v)) } else { pixels.append(UInt8(v)) }
                if i < fields.count - 1 { maxValue = max(maxValue, Int(v)) }
            }
        }
        guard let width, !labels.isEmpty else { throw DataError("\(path): no rows") }
        let features = width - 1
        let s = side ?? Int(Double(features).squareRoot())
        guard s * s == features else { throw DataError("\(path): \(features) values per row is not a square image") }
        let k = (labels.max() ?? 0) + 1
        // Sources with a small value range (the digits use 0–16) are stretched to 0–255 so every
        // dataset and every image file share one pixel scale.
        if maxValue <= 16 { pixels = pixels.map { UInt8((Double($0) * 255 / 16).rounded()) } }
        return Dataset(
            pixels: pixels, count: labels.count, channels: 1, height: s, width: s, labels: labels, classes: (0..<k).map(String.init),
            source: path)
    }
}

extension String {
    /// The string without leading and trailing characters from `set` (Foundation-free).
    public func trimmingCharacters(in set: String) -> String {
        let drop = Set(set)
        var s = Substring(self)
        while let f = s.first, drop.contains(f) { s = s.dropFirst() }
        while let l = s.last, drop.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
