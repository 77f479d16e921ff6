import Foundation
import Glibc
import KDTensor
import KDTestSupport
import Testing

@testable import KDData

enum Paths {
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()
    /// The committed default data (MNIST test set, digits) and the larger shared data beside the clone.
    static let local = root + "/data"
    static let data = root + "/../shared/data"

    static func temp(_ name: String) -> String {
        let dir = "/tmp/kdtool-data-tests-\(getpid())"
        mkdir(dir, 0o755)
        return dir + "/" + name
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let f = fopen(path, "wb")!
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}

@Suite("Data sources")
struct DataSourceTests {
    @Test("the shipped MNIST splits as 8000 train / 2000 eval")
    func mnist() throws {
        let train = try DataSource.load(Paths.local + "/mnist", .init(split: .train))
        let eval = try DataSource.load(Paths.local + "/mnist", .init(split: .eval))
        #expect(train.count == 8000 && eval.count == 2000)
        #expect(train.shape == [1, 28, 28])
        #expect(train.labels[0] == 7)  // the first MNIST test image is a 7
        #expect(train.classes == (0..<10).map(String.init))
    }

    @Test("a CIFAR tarball streams through libarchive with its own split and class names")
    func cifar() throws {
        let path = try TestData.cifarTarball(trainPerClass: 12, testPerClass: 3)
        let train = try DataSource.load(path, .init(split: .train))
        let eval = try DataSource.load(path, .init(split: .eval))
        #expect(train.count == 120 && eval.count == 30, "both train batches, and the test batch")
        #expect(train.shape == [3, 32, 32])
        #expect(train.classes == TestData.cifarClasses)
        #expect(train.labels.prefix(3) == [0, 1, 2])
    }

    @Test(
        "the shared CIFAR subset beside the clone",
        .enabled(if: FileManager.default.fileExists(atPath: Paths.data + "/cifar10"), "needs ../shared"))
    func sharedCIFAR() throws {
        let path = Paths.data + "/cifar10/cifar-10-binary-subset.tar.gz"
        let train = try DataSource.load(path, .init(split: .train))
        let eval = try DataSource.load(path, .init(split: .eval))
        #expect(train.count == 5085 && eval.count == 1017)
        #expect(train.classes.first == "airplane" && train.classes.count == 10)
    }

    @Test("the digits CSV holds out a seeded 20 %, stable across calls")
    func digits() throws {
        let path = Paths.local + "/digits/digits.csv.gz"
        let a = try DataSource.load(path, .init(split: .eval))
        let b = try DataSource.load(path, .init(split: .eval))
        let t = try DataSource.load(path, .init(split: .train))
        #expect(a.count + t.count == 1797 && a.labels == b.labels && a.count == 359)
        #expect(t.pixels.max() == 255, "0–16 values are stretched to 0–255")
    }

    @Test("bad data names the file and the place")
    func badData() throws {
        let good = try Gzip.read(Paths.local + "/mnist/t10k-labels-idx1-ubyte.gz")
        let dir = Paths.temp("badidx")
        mkdir(dir, 0o755)
        writeFile(dir + "/t10k-images-idx3-ubyte", [0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3])
        writeFile(dir + "/t10k-labels-idx1-ubyte", good)
        let e = #expect(throws: DataError.self) { try DataSource.load(dir, .init(split: .all)) }
        #expect(e?.description.contains("t10k-images-idx3-ubyte") == true)
        writeFile(dir + "/t10k-images-idx3-ubyte", [0, 0, 9, 3] + [UInt8](repeating: 0, count: 12))
        let m = #expect(throws: DataError.self) { try DataSource.load(dir, .init(split: .all)) }
        #expect(m?.description.contains("magic") == true)

        let csv = Paths.temp("bad.csv")
        writeFile(csv, Array("1,2,3,4,0\n1,2,3,0\n".utf8))
        let c = #expect(throws: DataError.self) { try DataSource.load(csv, .init(split: .all)) }
        #expect(c?.description.contains("row 2") == true)

        let folder = Paths.temp("badimages")
        mkdir(folder, 0o755)
        mkdir(folder + "/cat", 0o755)
        writeFile(folder + "/cat/broken.png", [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0])
        let i = #expect(throws: DataError.self) { try DataSource.load(folder, .init(split: .all, imageShape: [1, 8, 8])) }
        #expect(i?.description.contains("broken.png") == true)
    }
}

@Suite("Batches")
struct BatcherTests {
    let data = try! DataSource.load(Paths.local + "/digits/digits.csv.gz", .init(split: .train))
    let norm = Normalization(scale: 1.0 / 255, mean: [0.5], std: [0.25])

    @Test("a batch depends only on (seed, epoch, index)")
    func deterministic() {
        let b = Batcher(
            data, batchSize: 32, shuffle: true, augmentation: Augmentation(padCrop: 1, horizontalFlip: true), normalization: norm, seed: 5)
        let x = b.batch(epoch: 3, index: 7)
        let y = b.batch(epoch: 3, index: 7)
        #expect(x.inputs.array == y.inputs.array && x.labels == y.labels)
        #expect(b.batch(epoch: 4, index: 7).indices != x.indices)
        let prefetched = Array(b.prefetching(epoch: 3, from: 7))
        #expect(prefetched.first?.inputs.array == x.inputs.array)
        #expect(prefetched.count == b.batchesPerEpoch - 7)
    }

    @Test("every example appears once per epoch; the last batch is partial")
    func coverage() {
        let b = Batcher(data, batchSize: 100, shuffle: true, normalization: norm, seed: 1)
        let all = (0..<b.batchesPerEpoch).flatMap { b.batch(epoch: 0, index: $0).indices }
        #expect(all.sorted() == Array(0..<data.count))
    }

    @Test("normalisation without augmentation is exact")
    func normalisation() {
        let b = Batcher(data, batchSize: 4, shuffle: false, normalization: norm, seed: 0)
        let x = b.batch(epoch: 0, index: 0)
        #expect(x.inputs[0] == (Float(data.pixels[0]) / 255 - 0.5) / 0.25)
    }
}
