import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// Which part of a source to use.
public enum Split: String, CaseIterable, Sendable {
    case train, eval, all
}

/// Opens a data path by what it is: a folder of MNIST IDX files, a numeric CSV (the 8×8 digits),
/// a CIFAR binary tarball, or a folder with one subfolder per class.
///
/// Splits: a source's own split wins (CIFAR's data_batch/test_batch; MNIST train-/t10k- files);
/// the shipped MNIST test set alone splits as images 0..7999 train and 8000..9999 eval; anything
/// else holds out a seeded `holdout` fraction for eval.
public enum DataSource {
    public struct Options: Sendable {
        public var split: Split = .train
        public var holdout: Double = 0.2
        public var seed: UInt64 = 0
        /// [C, H, W] images are converted to, for image folders (from the model's PREP).
        public var imageShape: [Int]?
        public var alpha: Image.AlphaPolicy = .white
        public var resize: ImageFolder.ResizePolicy = .stretch
        /// Invert image files (PREP.invert): for models trained on white-on-black digits.
        public var invert = false

        public init(split: Split = .train, holdout: Double = 0.2, seed: UInt64 = 0, imageShape: [Int]? = nil) {
            self.split = split
            self.holdout = holdout
            self.seed = seed
            self.imageShape = imageShape
        }
    }

    /// A folder of images (class folders or a flat transfer set), as opposed to an MNIST IDX folder.
    public static func isImageFolder(_ path: String) -> Bool {
        guard ImageFolder.isDirectory(path), let names = try? ImageFolder.entries(path) else { return false }
        return !names.contains { $0.contains("images-idx3-ubyte") }
    }

    public static func load(_ path: String, _ o: Options) throws -> Dataset {
        var st = stat()
        guard stat(path, &st) == 0 else { throw DataError("\(path): \(String(cString: strerror(errno)))") }
        let isDir = (st.st_mode & S_IFMT) == S_IFDIR
        let lower = path.lowercased()
        if isDir {
            let names = try ImageFolder.entries(path)
            if names.contains(where: { $0.contains("images-idx3-ubyte") }) { return try mnist(path, names, o) }
            guard let shape = o.imageShape else {
                throw DataError("\(path): an image folder needs the model's input shape (C×H×W) to load")
            }
            return try holdout(ImageFolder.load(path, shape: shape, alpha: o.alpha, resize: o.resize, invert: o.invert), o)
        }
        if lower.hasSuffix(".csv") || lower.hasSuffix(".csv.gz") { return try holdout(CSVData.load(path), o) }
        if lower.hasSuffix(".tar.gz") || lower.hasSuffix(".tgz") || lower.hasSuffix(".tar") {
            let b = try CIFAR.load(path)
            switch o.split {
            case .train: return b.train
            case .eval: return b.test
            case .all:
                var all = b.train
                all.pixels += b.test.pixels
                all.labels += b.test.labels
                all.count += b.test.count
                all.split = "all"
                return all
            }
        }
        if lower.contains("idx3-ubyte") {
            let dir = path.split(separator: "/").dropLast().joined(separator: "/")
            return try mnist(
                path.hasPrefix("/") ? "/" + dir : (dir.isEmpty ? "." : dir), [String(path.split(separator: "/").last ?? Substring(path))], o
            )
        }
        throw DataError(
            "\(path): not a data source kdtool knows (MNIST IDX folder, .csv[.gz], CIFAR .tar.gz, or a folder of class folders)")
    }

    static func mnist(_ dir: String, _ names: [String], _ o: Options) throws -> Dataset {
        func find(_ prefix: String, _ kind: String) -> String? {
            names.first { $0.hasPrefix(prefix) && $0.contains("\(kind)-idx") }.map { dir + "/" + $0 }
        }
        func load(_ prefix: String) throws -> Dataset? {
            guard let imgPath = find(prefix, "images") else { return nil }
            guard let lblPath = find(prefix, "labels") else { throw DataError("\(dir): \(imgPath) has no matching labels file") }
            let img = try IDX.images(imgPath)
            let labels = try IDX.labels(lblPath)
            guard labels.count == img.count else {
                throw DataError("\(lblPath): \(labels.count) labels for \(img.count) images in \(imgPath)")
            }
            if let bad = labels.firstIndex(where: { $0 > 9 }) {
                throw DataError("\(lblPath): label \(labels[bad]) at index \(bad) is not a digit")
            }
            return Dataset(
                pixels: img.pixels, count: img.count, channels: 1, height: img.height, width: img.width, labels: labels,
                classes: (0..<10).map(String.init), source: dir)
        }
        let train = try load("train")
        guard let test = try load("t10k") ?? train else { throw DataError("\(dir): no MNIST images file") }
        if let train {
            switch o.split {
            case .train: return train.range(0..<train.count, split: "train")
            case .eval: return test.range(0..<test.count, split: "eval")
            case .all: return train.subset(Array(0..<train.count), split: "all")
            }
        }
        // The shipped MNIST test set alone: the documented 8000/2000 split.
        let cut = test.count == 10_000 ? 8000 : Int(Double(test.count) * (1 - o.holdout))
        switch o.split {
        case .train: return test.range(0..<cut, split: "train")
        case .eval: return test.range(cut..<test.count, split: "eval")
        case .all: return test.range(0..<test.count, split: "all")
        }
    }

    static func holdout(_ d: Dataset, _ o: Options) throws -> Dataset {
        if o.split == .all { return d }
        let (train, held) = d.holdout(fraction: o.holdout, seed: o.seed)
        var out = o.split == .train ? train : held
        out.split = o.split.rawValue
        return out
    }
}
