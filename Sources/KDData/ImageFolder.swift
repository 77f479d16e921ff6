import KDIO
import KDTensor

#if canImport(Glibc)
    import Glibc
#endif

/// A folder with one subfolder per class; class names are the subfolder names, in sorted order.
public enum ImageFolder {
    /// Regular files below `dir`, sorted, recursing into subfolders; symlinks are followed once
    /// (a link back to an ancestor is skipped, so loops end).
    public static func files(in dir: String, recursive: Bool = true) throws -> [String] {
        var out: [String] = []
        var walk = try FileWalk(dir, recursive: recursive)
        while let path = try walk.next() { out.append(path) }
        return out
    }

    /// The names in `dir` (no dot files), sorted.
    static func entries(_ dir: String) throws -> [String] { try typedEntries(dir).map(\.name) }

    /// The names in `dir` (no dot files), sorted, with the type `readdir` gives (`DT_UNKNOWN` and
    /// `DT_LNK` still need a `stat`).
    static func typedEntries(_ dir: String) throws -> [(name: String, type: UInt8)] {
        guard let d = PathCoding.withCString(dir, { opendir($0) }) else {
            throw DataError("\(PathCoding.display(dir)): \(String(cString: strerror(errno)))")
        }
        defer { closedir(d) }
        var names: [(name: String, type: UInt8)] = []
        while let e = readdir(d) {
            // Names are bytes: ones that are not UTF-8 are decoded losslessly (PathCoding) and opened as they are.
            let name = PathCoding.entryName(e)
            if name != "." && name != ".." && !name.hasPrefix(".") { names.append((name, e.pointee.d_type)) }
        }
        return names.sorted { $0.name < $1.name }
    }

    /// PNG or JPEG by magic bytes.
    /// Regular files only: a FIFO or device is never opened in a way that could block.
    static func isImageFile(_ path: String) -> Bool {
        guard let b = SafeFile.prefix(path, 8) else { return false }
        return (b.count >= 8 && b == [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
            || (b.count >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
    }

    public static func isDirectory(_ path: String) -> Bool { SafeFile.fileType(path) == .directory }

    /// Decodes, converts and resizes every image to `shape` = [C, H, W]; any bad image is an
    /// error naming the file. Decoding runs on `Parallel.threads` workers.
    public static func load(
        _ dir: String, shape: [Int], alpha: Image.AlphaPolicy = .white, resize: ResizePolicy = .stretch, invert: Bool = false,
        classes fixed: [String]? = nil
    ) throws -> Dataset {
        let classes = try fixed ?? entries(dir).filter { isDirectory(dir + "/" + $0) }
        var items: [(String, Int)] = []
        if classes.isEmpty {
            // No class folders: an unlabelled transfer set (distill --no-labels). Only PNG and JPEG files count.
            items = try files(in: dir).filter(isImageFile).map { ($0, 0) }
            guard !items.isEmpty else {
                throw DataError(
                    "\(dir): no class subfolders and no PNG/JPEG images (expected one folder per class, or images to distil on)")
            }
        }
        for (k, c) in classes.enumerated() where isDirectory(dir + "/" + c) {
            for f in try files(in: dir + "/" + c) { items.append((f, k)) }
        }
        guard !items.isEmpty else { throw DataError("\(dir): no images in the class folders") }
        let size = shape.reduce(1, *)
        // The decoded set is held in memory as bytes: its size is checked before it is allocated.
        let (total, overflow) = size.multipliedReportingOverflow(by: items.count)
        guard !overflow, total <= Caps.current.expandedBytes else {
            throw DataError(
                "\(PathCoding.display(dir)): \(items.count) images of \(shape) need more than \(Caps.current.expandedBytes) bytes in memory"
            )
        }
        var pixels = [UInt8](repeating: 0, count: total)
        var failures = [String?](repeating: nil, count: items.count)
        pixels.withUnsafeMutableBufferPointer { px in
            // Both buffers are non-empty: items is (checked above) and every shape size is ≥ 1.
            guard let pxBase = px.baseAddress else { return }
            let out = UncheckedBuffer(pxBase)
            failures.withUnsafeMutableBufferPointer { fail in
                guard let failBase = fail.baseAddress else { return }
                let errs = UncheckedBuffer(failBase)
                Parallel.chunks(items.count) { _, range in
                    for i in range {
                        do {
                            let planar = try prepare(
                                ImageDecoder.decode(file: items[i].0), shape: shape, alpha: alpha, resize: resize, invert: invert)
                            for j in 0..<size { out.pointer[i * size + j] = planar[j] }
                        } catch {
                            errs.pointer[i] = "\(error)"
                        }
                    }
                }
            }
        }
        if let message = failures.first(where: { $0 != nil }) ?? nil { throw DataError(message) }
        return Dataset(
            pixels: pixels, count: items.count, channels: shape[0], height: shape[1], width: shape[2], labels: items.map(\.1),
            classes: classes, source: dir)
    }

    public enum ResizePolicy: Sendable { case stretch, shorterSideCrop }

    /// Channel conversion, resizing and (for models trained on white-on-black data) inversion to
    /// the model's input, as planar CHW bytes. `infer`, `eval` and `train` on image files all use it.
    public static func prepare(_ img: Image, shape: [Int], alpha: Image.AlphaPolicy, resize: ResizePolicy, invert: Bool = false) -> [UInt8]
    {
        let converted = img.converted(toChannels: shape[0], alpha: alpha)
        let sized =
            resize == .stretch
            ? converted.resized(width: shape[2], height: shape[1]) : converted.resizedShorterSideCrop(width: shape[2], height: shape[1])
        return invert ? sized.planar.map { 255 - $0 } : sized.planar
    }
}

/// A raw pointer handed to worker threads that write disjoint elements.
struct UncheckedBuffer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { pointer = p }
}

/// The regular files below a folder in the order `ImageFolder.files` lists them (sorted,
/// depth first, symlinks followed once), one at a time: it holds the sorted names of the folders
/// it is in, not the whole tree's paths, so memory follows the largest folder, not the file count.
public struct FileWalk {
    private struct Frame {
        let dir: String
        let names: [(name: String, type: UInt8)]
        var index = 0
    }
    private var stack: [Frame] = []
    private var visited = Set<String>()
    private let recursive: Bool

    /// An error naming `dir` when it cannot be read.
    public init(_ dir: String, recursive: Bool = true) throws {
        self.recursive = recursive
        try enter(dir)
    }

    private mutating func enter(_ dir: String) throws {
        guard let key = SafeFile.realPath(dir) else { throw DataError("\(PathCoding.display(dir)): \(String(cString: strerror(errno)))") }
        guard visited.insert(key).inserted else { return }
        stack.append(Frame(dir: dir, names: try ImageFolder.typedEntries(dir)))
    }

    /// The next file's path, nil at the end; an error naming a subfolder that cannot be read.
    public mutating func next() throws -> String? {
        while let top = stack.last {
            guard top.index < top.names.count else {
                stack.removeLast()
                continue
            }
            let entry = top.names[top.index]
            stack[stack.count - 1].index += 1
            let path = top.dir.hasSuffix("/") ? top.dir + entry.name : top.dir + "/" + entry.name
            let isDirectory: Bool
            switch Int32(entry.type) {
            case Int32(DT_REG): isDirectory = false
            case Int32(DT_DIR): isDirectory = true
            default:
                var st = stat()
                // A dangling link or a vanished file is a path all the same: whoever opens it reports it.
                guard PathCoding.withCString(path, { stat($0, &st) }) == 0 else { return path }
                isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
            }
            if !isDirectory { return path }
            if recursive { try enter(path) }
        }
        return nil
    }

    /// How many files a walk of `dir` yields (a walk of its own: folders are read twice, files not opened).
    public static func count(_ dir: String, recursive: Bool = true) throws -> Int {
        var walk = try FileWalk(dir, recursive: recursive)
        var n = 0
        while try walk.next() != nil { n += 1 }
        return n
    }
}
