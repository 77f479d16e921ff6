import KDTensor
import Testing

@testable import KDDistill

@Suite("Verticals: covariance and k-means")
struct VerticalsTests {
    @Test("covariance of predictions matches the definition")
    func covariance() {
        let p = Tensor(shape: [3, 2], values: [1, 0, 0, 1, 0.5, 0.5])
        let c = Verticals.covariance(p)
        // means 0.5, 0.5; deviations (0.5,-0.5), (-0.5,0.5), (0,0) → var 1/6, cov −1/6
        #expect(abs(c[0][0] - 1.0 / 6) < 1e-12 && abs(c[0][1] + 1.0 / 6) < 1e-12 && c[0][1] == c[1][0])
    }

    @Test("k-means separates obvious groups, deterministically, with no empty cluster")
    func kMeans() {
        let points: [[Double]] = [[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [10, 0], [10, 0.2]]
        let a = Verticals.kMeans(points, k: 3, seed: 1)
        #expect(a == Verticals.kMeans(points, k: 3, seed: 1))
        #expect(Set(a[0..<3]).count == 1 && Set(a[3..<5]).count == 1 && Set(a[5..<7]).count == 1)
        #expect(Set(a).count == 3)
        let all = Verticals.kMeans(points, k: 7, seed: 2)
        #expect(Set(all).count == 7, "k = n gives singletons")
    }

    @Test("groups partition the classes; confusable classes end up together")
    func groups() {
        // Classes 0/1 are confused with each other, 2/3 likewise, 4 stands alone.
        var rows: [Float] = []
        var rng = RandomSource(seed: 3)
        for i in 0..<200 {
            var p = [Float](repeating: 0.01, count: 5)
            let a = rng.nextFloat()
            switch i % 3 {
            case 0:
                p[0] = a
                p[1] = 1 - a
            case 1:
                p[2] = a
                p[3] = 1 - a
            default: p[4] = 1
            }
            let s = p.reduce(0, +)
            rows += p.map { $0 / s }
        }
        let v = Verticals.group(probabilities: Tensor(shape: [200, 5], values: rows), count: 3, seed: 0)
        #expect(v.map(\.classes) == [[0, 1], [2, 3], [4]])
        #expect(v.map(\.name) == ["v1", "v2", "v3"])
    }
}
