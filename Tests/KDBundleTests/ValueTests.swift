import Testing

@testable import KDBundle

@Suite("The value encoding (Spec §6)")
struct ValueTests {
    func decode(_ bytes: [UInt8]) throws -> [String: Value] {
        try bytes.withUnsafeBytes { try Value.decodeSection($0, base: 0, fourcc: "TEST") }
    }

    func code(_ bytes: [UInt8]) -> BundleErrorCode? {
        do {
            _ = try decode(bytes)
            return nil
        } catch let e as BundleError {
            return e.code
        } catch {
            return nil
        }
    }

    @Test("every kind of value round-trips and the encoding is canonical")
    func roundTrip() throws {
        let v: [String: Value] = [
            "u": .uint(UInt64.max), "i": .int(-5), "f": .float(-0.25), "b": .bool(true), "s": .string("héllo"),
            "a": .array([.int(1), .string("x"), .array([])]), "m": .map(["z": .bool(false), "a": .floats([1.5, -2])]),
            "n": .ints([Int64.min, 0, Int64.max]),
        ]
        let bytes = Value.map(v).encoded()
        #expect(try decode(bytes) == v)
        #expect(Value.map(try decode(bytes)).encoded() == bytes)
    }

    @Test("hostile encodings give their specific errors")
    func hostile() {
        // map with one key "k" whose value is the given bytes
        func wrap(_ value: [UInt8]) -> [UInt8] { [7, 1, 0, 0, 0, 1, 0, 0x6b] + value }
        #expect(code(wrap([0x42])) == .malformedSection)  // unknown tag
        #expect(code(wrap([6, 0xff, 0xff, 0xff, 0xff])) == .malformedSection)  // count beyond the bytes left
        #expect(code(wrap([8, 0xff, 0xff, 0xff, 0x7f])) == .malformedSection)  // f32[] beyond the bytes left
        #expect(code(wrap([5, 2, 0, 0, 0, 0xc3, 0x28])) == .invalidUTF8)
        #expect(code(wrap([5, 0x01, 0x04, 0, 0] + [UInt8](repeating: 0x61, count: 1025))) == .stringTooLong)
        #expect(code(wrap([3] + Array(withUnsafeBytes(of: Double.nan.bitPattern) { Array($0) }))) == .nonFinite)
        #expect(code(wrap([4, 2])) == .invalidField)
        #expect(code(wrap([1, 0, 0])) == .malformedSection)  // truncated u64
        #expect(code(wrap([4, 1]) + [0]) == .malformedSection)  // trailing byte
        #expect(code([6, 0, 0, 0, 0]) == .malformedSection)  // top level is not a map
        let unsorted: [UInt8] = [7, 2, 0, 0, 0, 1, 0, 0x62, 4, 1, 1, 0, 0x61, 4, 1]
        #expect(code(unsorted) == .unsortedKeys)
        let duplicate: [UInt8] = [7, 2, 0, 0, 0, 1, 0, 0x61, 4, 1, 1, 0, 0x61, 4, 1]
        #expect(code(duplicate) == .unsortedKeys)
        var deep: [UInt8] = []
        for _ in 0..<20 { deep += [7, 1, 0, 0, 0, 1, 0, 0x64] }
        #expect(code(deep + [4, 1]) == .nestingTooDeep)
    }

    @Test("the writer refuses values the reader would reject")
    func writerRefuses() {
        #expect(throws: BundleError.self) { try Value.float(.infinity).validateForWriting() }
        #expect(throws: BundleError.self) { try Value.string(String(repeating: "x", count: 2000)).validateForWriting() }
        #expect(throws: BundleError.self) { try Value.map(["": .bool(true)]).validateForWriting() }
    }
}
