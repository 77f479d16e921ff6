import Foundation
import Testing

@testable import KDBundle

@Suite("Conformance fixtures (Spec/fixtures)")
struct FixtureTests {
    static let valid = Repo.fixtureFiles("valid")
    static let invalid = Repo.fixtureFiles("invalid")

    @Test("the suite is complete: ≥ 5 valid and ≥ 25 invalid fixtures")
    func counts() {
        #expect(Self.valid.count >= 5)
        #expect(Self.invalid.count >= 25)
    }

    @Test("every rejection condition of DESIGN.md has a fixture")
    func coverage() {
        let required: [BundleErrorCode] = [
            .badMagic, .truncated, .trailingBytes, .headerChecksum, .unsupportedVersion, .unknownRequiredFeature,
            .outOfBounds, .arithmeticOverflow, .misalignedTensor, .overlappingRegions, .duplicateName, .unknownDType,
            .shapeLengthMismatch, .nonFinite, .missingTensor, .graphCycle, .unknownOp, .unknownCriticalSection,
            .sectionChecksum, .deflateBomb, .invalidUTF8, .classIndexOutOfRange, .unknownNode, .nonZeroPadding,
            .rankTooLarge, .inflatedSizeCap, .fileChecksum,
        ]
        let present = Set(Self.invalid.map { String($0.lastPathComponent.prefix(3)) })
        for code in required { #expect(present.contains(code.rawValue), "no fixture for \(code.name)") }
    }

    @Test("valid fixtures open and verify", arguments: valid)
    func validOpens(url: URL) throws {
        try fullyCheck(url.path)
        try fullyCheck(url.path, mmap: false)
    }

    @Test("valid fixtures round-trip byte for byte", arguments: valid)
    func roundTrip(url: URL) throws {
        let original = try [UInt8](Data(contentsOf: url))
        let bundle = try ModelBundle(path: url.path)
        let rewritten = try BundleWriter.encode(bundle.contents())
        #expect(rewritten == original, "\(url.lastPathComponent): writer output differs from the fixture")
        let again = try ModelBundle(bytes: rewritten)
        #expect(try again.contentDigest() == bundle.contentDigest())
        #expect(again.fileDigest == bundle.fileDigest)
    }

    @Test("invalid fixtures are rejected with the code in their name", arguments: invalid)
    func invalidRejected(url: URL) throws {
        let name = url.lastPathComponent
        let expected = try #require(BundleErrorCode(rawValue: String(name.prefix(3))), "bad fixture name \(name)")
        for mmap in [true, false] {
            do {
                try fullyCheck(url.path, mmap: mmap)
                Issue.record("\(name) was accepted")
            } catch let e as BundleError {
                #expect(e.code == expected, "\(name): got \(e)")
                #expect(e.path == url.path, "the error must name the file")
            }
        }
    }

    @Test("a reader never allocates from an unchecked size: every prefix of a valid file fails cleanly")
    func prefixes() throws {
        let data = try [UInt8](Data(contentsOf: Self.valid.first { $0.lastPathComponent == "deflated.kdb" }!))
        for cut in stride(from: 0, to: data.count, by: 97) {
            #expect(throws: BundleError.self) { try ModelBundle(bytes: Array(data[..<cut])).verify() }
        }
    }
}
