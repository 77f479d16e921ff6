import Foundation
import KDMPI
import KDTestSupport
import Testing

@testable import KDTensor

/// kdtool's collectives over ranks that are threads of this process (the same code runs over MPI).
@Suite("collectives: ring allreduce, broadcast, gather")
struct CollectiveTests {
    func onRanks<R: Sendable>(_ n: Int, timeout: Double = 20, _ body: @escaping @Sendable (World) throws -> R) throws -> [R] {
        try ThreadRanks.run(n, timeout: timeout, body)
    }

    @Test("every rank gets the same sum, in a fixed order, for 2, 3 and 5 ranks and awkward sizes")
    func allreduce() throws {
        for n in [2, 3, 5] {
            for count in [0, 1, 4, 7, 1000] {
                let values: @Sendable (Int) -> [Float] = { r in (0..<count).map { Float(sin(Double($0 * 7 + r * 13))) * 1e3 } }
                let sums = try onRanks(n) { w in
                    var v = values(w.rank)
                    try w.allreduceSum(&v, what: "test")
                    return v
                }
                for r in 1..<n { #expect(sums[r] == sums[0], "rank \(r) agrees bit for bit (n \(n), count \(count))") }
                for i in 0..<count {
                    let exact = (0..<n).map { Double(values($0)[i]) }.reduce(0, +)
                    #expect(abs(Double(sums[0][i]) - exact) <= 1e-3 * Double(n), "element \(i)")
                }
                let again = try onRanks(n) { w in
                    var v = values(w.rank)
                    try w.allreduceSum(&v, what: "test")
                    return v
                }
                #expect(again[0] == sums[0], "the same inputs give the same bits again")
            }
        }
    }

    @Test("broadcast from any root, gather and allgather in rank order, agree")
    func broadcastGather() throws {
        for n in [2, 3, 4] {
            for root in 0..<n {
                let got = try onRanks(n) { w in
                    try w.broadcast(w.rank == root ? Array(0..<UInt8(37)) : [], root: root, what: "test")
                }
                #expect(got.allSatisfy { $0 == Array(0..<UInt8(37)) })
            }
            let gathered = try onRanks(n) { w in try w.gather(Array(repeating: UInt8(w.rank), count: w.rank + 1), what: "test") }
            #expect(gathered[0] == (0..<n).map { Array(repeating: UInt8($0), count: $0 + 1) })
            #expect(gathered.dropFirst().allSatisfy { $0 == nil })
            let everywhere = try onRanks(n) { w in try w.allgather([UInt8(w.rank * 3)], what: "test") }
            #expect(everywhere.allSatisfy { $0 == (0..<n).map { [UInt8($0 * 3)] } })
            let flags = try onRanks(n) { w in try w.agree(w.rank == 0, what: "test") }
            #expect(flags.allSatisfy { $0 })
        }
    }

    @Test("a silent rank is named after the timeout instead of a hang")
    func timeout() throws {
        let outcomes = try onRanks(2, timeout: 0.3) { w -> String in
            if w.rank == 1 { return "silent" }
            var v: [Float] = [1, 2, 3]
            do {
                try w.allreduceSum(&v, what: "the step's gradients")
                return "completed"
            } catch let e as CollectiveError {
                return e.message
            }
        }
        #expect(outcomes[0].contains("no message from rank 1") && outcomes[0].contains("the step's gradients"), "\(outcomes[0])")
    }

    @Test("a plain process is a world of one and loads no MPI library")
    func solo() throws {
        #expect(World.solo.size == 1 && World.solo.isRoot)
        var v: [Float] = [1, 2]
        try World.solo.allreduceSum(&v, what: "test")
        #expect(v == [1, 2])
        if getenv("OMPI_COMM_WORLD_SIZE") == nil && getenv("PMIX_RANK") == nil && getenv("PMI_RANK") == nil {
            #expect(MPITransport.launchedSize() == nil)
            #expect(try MPITransport.launch() == nil)
        }
    }
}
