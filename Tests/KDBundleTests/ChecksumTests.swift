import Testing

@testable import KDBundle

@Suite("Checksums")
struct ChecksumTests {
    func sha(_ s: String) -> String { Array(s.utf8).withUnsafeBytes { SHA256.hex($0) } }

    @Test("SHA-256 matches the FIPS 180-4 examples")
    func shaVectors() {
        #expect(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(sha(String(repeating: "a", count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test("SHA-256 streamed in odd chunks equals one shot")
    func shaChunks() {
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for chunk in [1, 3, 63, 64, 65, 1000] {
            var s = SHA256()
            var i = 0
            while i < data.count {
                s.update(Array(data[i..<min(i + chunk, data.count)]))
                i += chunk
            }
            #expect(s.finalize().hexString == data.withUnsafeBytes { SHA256.hex($0) })
        }
    }

    @Test("CRC-32 check value")
    func crc() {
        #expect(crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(crc32([]) == 0)
    }

    @Test("half and bfloat16 conversions round-trip exactly representable values")
    func halves() {
        for v: Float in [0, -0.0, 1, -2.5, 65504, 6.1035156e-05, 5.9604645e-08, 0.333251953125] {
            #expect(TensorConversion.halfToFloat(TensorConversion.floatToHalf(v)) == v)
        }
        #expect(TensorConversion.halfToFloat(TensorConversion.floatToHalf(70000)).isInfinite)
        // Round to nearest even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
        #expect(TensorConversion.floatToHalf(1 + 0x1p-11) == TensorConversion.floatToHalf(1))
        for v: Float in [1, -3.25, 0x1p60] { #expect(TensorConversion.bf16ToFloat(TensorConversion.floatToBF16(v)) == v) }
    }
}
