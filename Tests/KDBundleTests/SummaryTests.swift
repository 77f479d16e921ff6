import Foundation
import Testing

@testable import KDBundle

@Suite("BundleSummary (what inspect shows, as a library call)")
struct SummaryTests {
    @Test("every section decoded, CRCs known, nodes in file order with shapes and FLOPs")
    func allSections() throws {
        let b = try ModelBundle(path: Repo.fixtures.appendingPathComponent("valid/all-sections.kdb").path)
        let s = try BundleSummary(b)
        #expect(s.sectionCRC.values.allSatisfy { $0 } && s.sectionCRC.count == b.sections.count)
        #expect(s.nodeStats.map(\.node.name) == s.graph?.nodes.map(\.name))
        #expect(s.nodeStats.reduce(0) { $0 + $1.parameters } == 282)
        #expect(s.labels?.classes.count == 10 && s.preprocessing != nil && s.verticals?.verticals.count == 3)
        #expect(s.contentDigest == (try b.contentDigest()))
        #expect(b.computedFileDigest() == b.fileDigest, "a valid file's trailer is its SHA-256")
    }

    @Test("an unknown non-critical section is never inflated: a broken stream inside it opens and verifies")
    func unknownNotInflated() throws {
        let b = try ModelBundle(path: Repo.fixtures.appendingPathComponent("valid/unknown-optional-section-not-inflated.kdb").path)
        try b.verify()
        let s = try BundleSummary(b)
        #expect(s.sectionCRC["XTRA"] == true)
    }

    @Test("a stale CRC in an unknown section is found by verify only")
    func unknownCRC() throws {
        let path = Repo.fixtures.appendingPathComponent("invalid/E20-section-checksum-unknown-section.kdb").path
        let b = try ModelBundle(path: path)
        #expect(try BundleSummary(b).sectionCRC["XTRA"] == false)
        let e = #expect(throws: BundleError.self) { try b.verify() }
        #expect(e?.code == .sectionChecksum && e?.errorCode == "KDB-E20")
    }

    @Test("tensor statistics count NaN and infinities apart")
    func stats() {
        let s = TensorStats([1, 2, 3, .nan, .infinity])
        #expect(s.count == 5 && s.nan == 1 && s.inf == 1 && s.min == 1 && s.mean == 2)
    }
}
