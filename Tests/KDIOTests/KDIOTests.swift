import Foundation
import XCTest

@testable import KDIO

final class CheckedTests: XCTestCase {
    func testProductRefusesOverflowNegativeAndCap() throws {
        let c = Checked("f.bin")
        XCTAssertEqual(try c.product([2, 3, 4], "shape"), 24)
        XCTAssertEqual(try c.product([Int64](), "shape"), 1)
        XCTAssertThrowsError(try c.product([Int64(1) << 32, Int64(1) << 32], "shape"))
        XCTAssertThrowsError(try c.product([-1, 4], "shape"))
        XCTAssertThrowsError(try c.product([1000, 1000], "shape", cap: 999_999))
        XCTAssertThrowsError(try c.product([UInt64.max], "shape"))
        do {
            _ = try c.product([Int64(1) << 62, 4], "dims")
            XCTFail("no error")
        } catch let e as InputError {
            XCTAssertTrue(e.description.hasPrefix("f.bin: dims"), e.description)
        }
    }

    func testRangeAxisBytes() throws {
        let c = Checked("x")
        XCTAssertEqual(try c.range(4, 8, within: 12, "t"), 4..<12)
        XCTAssertThrowsError(try c.range(5, 8, within: 12, "t"))
        XCTAssertThrowsError(try c.range(Int.max, Int.max, within: 12, "t"))
        XCTAssertThrowsError(try c.range(-1, 1, within: 12, "t"))
        XCTAssertEqual(try c.axis(-1, rank: 4, "a"), 3)
        XCTAssertThrowsError(try c.axis(4, rank: 4, "a"))
        XCTAssertThrowsError(try c.axis(Int64.min, rank: 4, "a"))
        XCTAssertThrowsError(try c.bytes(Int.max / 2, each: 4, "b"))
        XCTAssertEqual(try c.bytes(10, each: 4, "b"), 40)
        XCTAssertThrowsError(try c.sum(Int.max, 1, "s"))
    }
}

final class PathCodingTests: XCTestCase {
    func testNonUTF8NamesRoundTripLosslessly() {
        let cases: [[UInt8]] = [
            Array("plain.png".utf8), [0x63, 0x61, 0x66, 0xE9, 0xFF, 0x2E, 0x70], [0xC3], [0xF4, 0x8F, 0xBF, 0x80],  // U+10FFC0 as UTF-8
            Array("日本.jpg".utf8) + [0x80],
        ]
        for bytes in cases {
            let s = PathCoding.decode(bytes)
            XCTAssertEqual(PathCoding.bytes(s), bytes, "\(bytes)")
        }
        let raw = PathCoding.decode([0x61, 0xFF])
        XCTAssertTrue(PathCoding.isRaw(raw))
        XCTAssertEqual(PathCoding.display(raw), "a\\xff")
        XCTAssertEqual(PathCoding.base64(raw), "Yf8=")
        XCTAssertFalse(PathCoding.isRaw("café"))
    }

    func testCSVFieldQuotesEveryDangerousByte() {
        XCTAssertEqual(CSVField.encode("plain"), Array("plain".utf8))
        XCTAssertEqual(String(decoding: CSVField.encode("cr\r\nlf,\"q\".png"), as: UTF8.self), "\"cr\r\nlf,\"\"q\"\".png\"")
        XCTAssertEqual(CSVField.encode(PathCoding.decode([0x41, 0xFF])), [0x41, 0xFF])
    }
}

final class FilesTests: XCTestCase {
    var dir = ""

    override func setUp() {
        dir = NSTemporaryDirectory() + "kdio-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testFifoDeviceAndFolderAreRefusedWithoutBlocking() throws {
        let fifo = dir + "/x.png"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let started = Date()
        XCTAssertThrowsError(try SafeFile.readAll(fifo)) { e in XCTAssertTrue("\(e)".contains("FIFO"), "\(e)") }
        XCTAssertThrowsError(try SafeFile.readAll("/dev/zero"))
        XCTAssertThrowsError(try SafeFile.readAll(dir))
        XCTAssertNil(SafeFile.prefix(fifo, 8))
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
    }

    func testReadAllHonoursTheLimit() throws {
        try Data(repeating: 7, count: 100).write(to: URL(fileURLWithPath: dir + "/f"))
        XCTAssertEqual(try SafeFile.readAll(dir + "/f").count, 100)
        XCTAssertThrowsError(try SafeFile.readAll(dir + "/f", limit: 99))
    }

    func testExternalDataMustResolveInsideTheFolder() throws {
        let model = dir + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try Data([1, 2, 3, 4, 5, 6, 7, 8]).write(to: URL(fileURLWithPath: model + "/w.bin"))
        try Data([9, 9]).write(to: URL(fileURLWithPath: dir + "/secret"))
        XCTAssertEqual(try SafeFile.readRangeInside(folder: model, relative: "w.bin", offset: 2, length: 3), [3, 4, 5])
        XCTAssertEqual(try SafeFile.readRangeInside(folder: model, relative: "w.bin", offset: 6, length: nil), [7, 8])
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "w.bin", offset: 6, length: 3))
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "w.bin", offset: Int.max, length: 1))
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "../secret", offset: 0, length: nil))
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "/etc/passwd", offset: 0, length: nil))
        XCTAssertEqual(symlink("/etc/passwd", model + "/link"), 0)
        XCTAssertEqual(symlink("..", model + "/up"), 0)
        XCTAssertEqual(symlink("w.bin", model + "/inside"), 0)
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "link", offset: 0, length: nil))
        XCTAssertThrowsError(try SafeFile.readRangeInside(folder: model, relative: "up/secret", offset: 0, length: nil))
        XCTAssertEqual(try SafeFile.readRangeInside(folder: model, relative: "inside", offset: 0, length: 1), [1])
    }
}

final class OutputTests: XCTestCase {
    var dir = ""

    override func setUp() {
        dir = NSTemporaryDirectory() + "kdio-out-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testAtomicWriteKeepsTheOldFileUntilCommit() throws {
        let path = dir + "/out.csv"
        try AtomicOutput.write("old\n", to: path)
        var out: AtomicOutput? = try AtomicOutput(path)
        try out!.write("new\n")
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "old\n")
        out = nil  // dropped without commit: the temporary goes, the old file stays
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "old\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["out.csv"])
        try AtomicOutput.write("new\n", to: path)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "new\n")
    }

    func testAFullDiskIsAnErrorAndTheOldFileStays() throws {
        // /dev/full fails every write with ENOSPC; write() goes through the same checked path.
        let fd = open("/dev/full", O_WRONLY)
        try XCTSkipIf(fd < 0, "no /dev/full")
        defer { close(fd) }
        let bytes = [UInt8](repeating: 1, count: 10)
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try AtomicOutput.writeAll(fd, $0, path: "p") }) { e in
            XCTAssertTrue(e is OutputError)
        }
    }

    func testMissingFolderAndStaleTemporaries() throws {
        XCTAssertThrowsError(try AtomicOutput.checkWritable(dir + "/no/such/file.kdb")) { XCTAssertTrue($0 is OutputError) }
        XCTAssertThrowsError(try AtomicOutput.write("x", to: dir + "/no/such/file.kdb")) { XCTAssertTrue($0 is OutputError) }
        XCTAssertNoThrow(try AtomicOutput.checkWritable(dir + "/file.kdb"))
        // A dead writer's temporary (pid 2^22 + 1 is above Linux's default pid_max ceiling of 2^22).
        let stale = dir + "/.file.kdb.tmp-4194305-1"
        FileManager.default.createFile(atPath: stale, contents: Data([1]))
        try AtomicOutput.write("x", to: dir + "/file.kdb")
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    func testALockIsExclusiveAndGoesWithItsOwner() throws {
        var lock: OutputLock? = try OutputLock(dir + "/run.kdb")
        XCTAssertNotNil(lock)
        // flock locks belong to the open file description: a second open in this process conflicts too.
        XCTAssertThrowsError(try OutputLock(dir + "/run.kdb")) { XCTAssertTrue("\($0)".contains("another kdtool run")) }
        lock = nil
        XCTAssertNoThrow(try OutputLock(dir + "/run.kdb"))
    }
}

final class DirectoryEntryTests: XCTestCase {
    /// Names of every length, and one that is not UTF-8, come back from `readdir` whole; the name is
    /// read within its record (copying all of `d_name` read past the last one: found by AddressSanitizer).
    func testEntryNamesOfEveryLength() throws {
        let dir = NSTemporaryDirectory() + "kdtool-dirent-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var want = Set((1...60).map { String(repeating: "n", count: $0) })
        for name in want { FileManager.default.createFile(atPath: "\(dir)/\(name)", contents: nil) }
        let odd = [UInt8]([0x61, 0xFF, 0x62]).withUnsafeBytes { PathCoding.decode($0) }
        let fd = PathCoding.withCString("\(dir)/\(odd)") { creat($0, 0o644) }
        XCTAssertTrue(fd >= 0)
        close(fd)
        want.insert(odd)
        let d = try XCTUnwrap(PathCoding.withCString(dir) { opendir($0) })
        defer { closedir(d) }
        var got = Set<String>()
        while let e = readdir(d) {
            let name = PathCoding.entryName(e)
            if name != "." && name != ".." { got.insert(name) }
        }
        XCTAssertEqual(got, want)
    }
}
