import KDTensor

/// How raw pixels become inputs: x = (pixel · scale − mean[c]) / std[c].
public struct Normalization: Sendable, Equatable {
    public var scale: Float
    public var mean: [Float]
    public var std: [Float]

    public init(scale: Float, mean: [Float], std: [Float]) {
        self.scale = scale
        self.mean = mean
        self.std = std
    }
}

/// Training-time augmentation.
public struct Augmentation: Sendable, Equatable {
    /// Zero-pad by this many pixels on each side, then crop back at a random offset.
    public var padCrop: Int
    public var horizontalFlip: Bool

    public init(padCrop: Int = 0, horizontalFlip: Bool = false) {
        self.padCrop = padCrop
        self.horizontalFlip = horizontalFlip
    }

    public static let none = Augmentation()
    public var isNone: Bool { padCrop == 0 && !horizontalFlip }
}

/// Deterministic batches from a dataset: the order of epoch e is a permutation seeded by
/// (seed, e), and augmentation of batch b by (seed, e, b) — independent of what ran before.
public final class Batcher: BatchSource, @unchecked Sendable {
    public let dataset: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let augmentation: Augmentation
    public let normalization: Normalization
    public let seed: UInt64
    /// In a data-parallel run, this rank's share of every batch: of a batch of n examples, rank r
    /// of N takes examples n·r/N ..< n·(r+1)/N. Orders and augmentation are drawn for the whole
    /// batch whatever the share, so an example gets the same crop and flip for any N.
    public var shard: (rank: Int, count: Int) = (0, 1)

    public init(
        _ dataset: Dataset, batchSize: Int, shuffle: Bool, augmentation: Augmentation = .none, normalization: Normalization, seed: UInt64
    ) {
        self.dataset = dataset
        self.batchSize = max(1, batchSize)
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.normalization = normalization
        self.seed = seed
    }

    public var exampleCount: Int { dataset.count }
    public var batchesPerEpoch: Int { (dataset.count + batchSize - 1) / batchSize }

    public func order(epoch: Int) -> [Int] {
        guard shuffle else { return Array(0..<dataset.count) }
        var rng = RandomSource(seed: seed, stream: 0x5eed, UInt64(epoch))
        return rng.permutation(dataset.count)
    }

    /// The positions within a batch of `n` examples that this rank takes.
    public func share(of n: Int) -> Range<Int> { (n * shard.rank / shard.count)..<(n * (shard.rank + 1) / shard.count) }

    public func batch(epoch: Int, index: Int) -> Batch {
        let all = order(epoch: epoch)
        let whole = Array(all[(index * batchSize)..<min(all.count, (index + 1) * batchSize)])
        let mine = share(of: whole.count)
        let indices = Array(whole[mine])
        var rng = RandomSource(seed: seed, stream: 0xa06, UInt64(epoch), UInt64(index))
        let (c, h, w) = (dataset.channels, dataset.height, dataset.width)
        let x = Tensor(uninitialized: [indices.count, c, h, w])
        let norm = normalization
        let size = c * h * w
        dataset.pixels.withUnsafeBufferPointer { px in
            guard let base = px.baseAddress else { return }  // an empty dataset has no batches
            for (position, i) in whole.enumerated() {
                let pad = augmentation.padCrop
                let dy = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
                let dx = pad > 0 ? rng.nextInt(below: 2 * pad + 1) - pad : 0
                let flip = augmentation.horizontalFlip && rng.nextFloat() < 0.5
                guard mine.contains(position) else { continue }
                let src = base + i * size
                let dst = x.pointer + (position - mine.lowerBound) * size
                for ch in 0..<c {
                    let a = norm.scale / norm.std[ch]
                    let off = -norm.mean[ch] / norm.std[ch]
                    for yy in 0..<h {
                        let sy = yy + dy
                        for xx in 0..<w {
                            let sx0 = flip ? w - 1 - xx : xx
                            let sx = sx0 + dx
                            let v: Float = sy >= 0 && sy < h && sx >= 0 && sx < w ? Float(src[(ch * h + sy) * w + sx]) : 0
                            dst[(ch * h + yy) * w + xx] = v * a + off
                        }
                    }
                }
            }
        }
        return Batch(inputs: x, labels: indices.map { dataset.labels[$0] }, indices: indices, globalCount: whole.count)
    }
}
