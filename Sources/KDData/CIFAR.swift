import CArchive
import KDIO

#if canImport(Glibc)
    import Glibc
#endif

/// CIFAR-10/100 binary tarballs, streamed through libarchive without extracting.
public enum CIFAR {
    public struct Batches {
        public var train: Dataset
        public var test: Dataset
    }

    public static func load(_ path: String) throws -> Batches {
        guard let a = archive_read_new() else { throw DataError("\(path): libarchive unavailable") }
        defer { archive_read_free(a) }
        archive_read_support_filter_all(a)
        archive_read_support_format_all(a)
        // A regular file only (a FIFO would block libarchive's open); libarchive reads the descriptor.
        let fd = try SafeFile.openForReading(path)
        defer { close(fd) }
        guard archive_read_open_fd(a, fd, 1 << 16) == ARCHIVE_OK else {
            throw DataError("\(path): cannot open archive: \(String(cString: archive_error_string(a)))")
        }
        // Members are read into memory: each one's declared size, and all of them together, are
        // checked against the cap before a byte is read (a small .tar.gz can declare terabytes).
        let cap = Caps.current.expandedBytes
        var total = 0
        var train: [UInt8] = []
        var test: [UInt8] = []
        var meta: [String]?
        var entry: OpaquePointer?
        var recordSize = 3073
        var labelBytes = 1
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN else {
                throw DataError("\(path): corrupt archive: \(String(cString: archive_error_string(a)))")
            }
            let name = String(cString: archive_entry_pathname(entry))
            let base = name.split(separator: "/").last.map(String.init) ?? name
            let isTrain = base.hasPrefix("data_batch") || base == "train.bin"
            let isTest = base.hasPrefix("test_batch") || base == "test.bin"
            let isMeta = base == "batches.meta.txt" || base == "fine_label_names.txt"
            guard isTrain || isTest || isMeta else { continue }
            if base == "train.bin" || base == "test.bin" {
                recordSize = 3074  // CIFAR-100: coarse and fine label bytes
                labelBytes = 2
            }
            let declared = archive_entry_size_is_set(entry) != 0 ? try Checked(path).count(archive_entry_size(entry), "\(name)'s size") : 0
            let metaCap = 1 << 20
            guard declared >= 0, declared <= (isMeta ? metaCap : cap - total) else {
                throw DataError("\(path): \(name) declares \(declared) bytes, above the limit of \(isMeta ? metaCap : cap) bytes")
            }
            var data: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buf.withUnsafeMutableBytes { archive_read_data(a, $0.baseAddress, $0.count) }
                if n < 0 { throw DataError("\(path): \(name): \(String(cString: archive_error_string(a)))") }
                if n == 0 { break }
                data.append(contentsOf: buf[0..<n])
                guard data.count <= (isMeta ? metaCap : cap - total) else {
                    throw DataError("\(path): \(name) holds more than the limit of \(isMeta ? metaCap : cap) bytes")
                }
            }
            if !isMeta { total += data.count }
            if isMeta {
                meta = String(decoding: data, as: UTF8.self).split(separator: "\n").map { String($0).trimmingCharacters(in: " \r") }
                    .filter { !$0.isEmpty }
            } else {
                guard data.count % recordSize == 0 else {
                    throw DataError("\(path): \(name) has \(data.count) bytes, not a multiple of the \(recordSize)-byte record")
                }
                if isTrain { train += data } else { test += data }
            }
        }
        guard !train.isEmpty || !test.isEmpty else { throw DataError("\(path): no CIFAR data_batch/test_batch files inside") }
        func dataset(_ d: [UInt8], split: String) throws -> Dataset {
            let n = d.count / recordSize
            var labels: [Int] = []
            var pixels: [UInt8] = []
            pixels.reserveCapacity(n * 3072)
            for i in 0..<n {
                labels.append(Int(d[i * recordSize + labelBytes - 1]))
                pixels.append(contentsOf: d[(i * recordSize + labelBytes)..<((i + 1) * recordSize)])
            }
            let k = max(meta?.count ?? 0, (labels.max() ?? 0) + 1)
            if let bad = labels.firstIndex(where: { $0 >= k }) { throw DataError("\(path): record \(bad) has label \(labels[bad]) ≥ \(k)") }
            let classes = meta.map { Array($0.prefix(k)) } ?? (0..<k).map(String.init)
            return Dataset(
                pixels: pixels, count: n, channels: 3, height: 32, width: 32, labels: labels, classes: classes, source: path, split: split)
        }
        return Batches(train: try dataset(train, split: "train"), test: try dataset(test, split: "eval"))
    }
}
