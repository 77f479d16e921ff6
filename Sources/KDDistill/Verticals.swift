import KDBundle
import KDTensor

/// Groups of confusable classes from a generalist's predictions (METHODS.md §1, Hinton et al.'s
/// specialists): the class covariance of the predicted distributions over the data, its rows
/// clustered by k-means into M groups. The groups become verticals for specialists and for
/// Knowledge Concentration.
public enum Verticals {
    /// Covariance K×K of the rows of `p` ([N, K] probabilities).
    public static func covariance(_ p: Tensor) -> [[Double]] {
        let (n, k) = (p.shape[0], p.count / max(1, p.shape[0]))
        var mean = [Double](repeating: 0, count: k)
        for i in 0..<n { for j in 0..<k { mean[j] += Double(p[i * k + j]) } }
        for j in 0..<k { mean[j] /= Double(max(n, 1)) }
        var c = [[Double]](repeating: [Double](repeating: 0, count: k), count: k)
        for i in 0..<n {
            for a in 0..<k {
                let da = Double(p[i * k + a]) - mean[a]
                for b in a..<k { c[a][b] += da * (Double(p[i * k + b]) - mean[b]) }
            }
        }
        for a in 0..<k {
            for b in a..<k {
                c[a][b] /= Double(max(n, 1))
                c[b][a] = c[a][b]
            }
        }
        return c
    }

    /// k-means (k-means++ seeding from `seed`, Lloyd iterations to convergence) on the rows of
    /// `points`; returns the cluster of each row. Every cluster keeps at least one row.
    public static func kMeans(_ points: [[Double]], k: Int, seed: UInt64, iterations: Int = 100) -> [Int] {
        let n = points.count
        precondition(k >= 1 && k <= n)
        func dist(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
        var rng = RandomSource(seed: seed, stream: 0x4b4d)
        var centers = [points[rng.nextInt(below: n)]]
        while centers.count < k {
            let d = points.map { p in centers.map { dist(p, $0) }.min()! }
            let total = d.reduce(0, +)
            var pick = 0
            if total > 0 {
                var r = rng.nextDouble() * total
                for (i, v) in d.enumerated() {
                    r -= v
                    if r <= 0 {
                        pick = i
                        break
                    }
                }
            } else {
                pick = (0..<n).first { i in !centers.contains(points[i]) } ?? 0
            }
            centers.append(points[pick])
        }
        var assign = [Int](repeating: -1, count: n)
        for _ in 0..<iterations {
            var next = points.map { p in (0..<k).min { dist(p, centers[$0]) < dist(p, centers[$1]) }! }
            // An emptied cluster takes the point farthest from its current center.
            for c in 0..<k where !next.contains(c) {
                let far = (0..<n).filter { i in next.filter { $0 == next[i] }.count > 1 }.max {
                    dist(points[$0], centers[next[$0]]) < dist(points[$1], centers[next[$1]])
                }!
                next[far] = c
            }
            if next == assign { break }
            assign = next
            for c in 0..<k {
                let members = (0..<n).filter { assign[$0] == c }
                centers[c] = (0..<points[0].count).map { j in members.reduce(0) { $0 + points[$1][j] } / Double(members.count) }
            }
        }
        return assign
    }

    /// M verticals from predicted probabilities; groups ordered by their smallest class, each
    /// named `v1`, `v2`, … with its classes ascending.
    public static func group(probabilities p: Tensor, count m: Int, seed: UInt64) -> [VerticalMap.Vertical] {
        let assign = kMeans(covariance(p), k: m, seed: seed)
        let groups = (0..<m).map { c in (0..<assign.count).filter { assign[$0] == c } }.sorted { $0[0] < $1[0] }
        return groups.enumerated().map { VerticalMap.Vertical(name: "v\($0.offset + 1)", classes: $0.element) }
    }
}
