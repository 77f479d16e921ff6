/// y = x·Wᵀ + b (+ ReLU) with the weights packed once, for inference on small batches.
///
/// An inference slice is a few images, so a linear layer is a GEMM of a few rows: OpenBLAS packs
/// the whole weight matrix again on every call (as much work as the product itself at LeNet-5's
/// 400 → 120), and two threads calling it at once contend inside it (measured: the slices of a
/// batch took 22 % longer on two workers than on one). Here the weights are packed at plan time as
/// groups of at most four vectors (three in an AVX2 build) of L output features, each group
/// `[I][vectors][L]` (one sequential stream; see `groups(vectors:lanes:)`), and a tile of R rows ×
/// B vectors is accumulated in registers from broadcast inputs: R + B loads per R·B multiply-adds,
/// as in the direct convolution.
public struct PackedLinear: @unchecked Sendable {
    public let inFeatures: Int
    public let outFeatures: Int
    /// Output features per vector: 16 in an AVX-512 build, else 8.
    public let lanes: Int
    /// Per group of vectors, [I][group's vectors][lanes]; zero past O.
    let packed: Tensor
    /// ⌈O/lanes⌉·lanes, zero past O.
    let bias: Tensor

    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
        let (o, i) = (weight.shape[0], weight.shape[1])
        inFeatures = i
        outFeatures = o
        lanes = VectorUnits.wide ? 16 : 8
        let vectors = (o + lanes - 1) / lanes
        packed = Tensor(zeros: [vectors * i * lanes])
        let (wp, pp, l) = (weight.pointer, packed.pointer, lanes)
        // Vector v of group g (first vector v0, `count` vectors) at input feature c:
        // v0·i·l + (c·count + v − v0)·l, so a group is one sequential stream.
        let groups = Self.groups(vectors: vectors, lanes: l)
        for g in 0..<groups {
            let (v0, count) = Self.group(g, of: groups, vectors: vectors)
            for v in v0..<(v0 + count) {
                for lane in 0..<l where v * l + lane < o {
                    let r = v * l + lane
                    for c in 0..<i { pp[v0 * i * l + (c * count + v - v0) * l + lane] = wp[r * i + c] }
                }
            }
        }
        self.bias = Tensor(zeros: [vectors * lanes])
        if let bias { self.bias.pointer.update(from: bias.pointer, count: o) }
    }

    /// The epilogue's activation as applied in registers (ReLU, or a clip to [0, u] such as
    /// ReLU6: a ReLU with a ceiling), and what is left for a pass over the output.
    static func registers(_ epilogue: Epilogue) -> (relu: Bool, upper: Float, rest: Activation?) {
        if case .clip(let lo, let hi)? = epilogue.activation, lo == 0, hi > 0 { return (true, hi, nil) }
        return (epilogue.isReLU, .infinity, epilogue.activation)
    }

    /// Whether `callAsFunction(_:_:n:h:w:pad:)` takes `epilogue`: an activation the kernel applies
    /// in registers (or none), after the residual where there is one.
    public static func storesBlocked(_ epilogue: Epilogue) -> Bool { registers(epilogue).rest == nil }

    /// [N, I] → [N, O], then the epilogue's activation (ReLU in registers; it has no residual).
    public func callAsFunction(_ x: Tensor, _ epilogue: Epilogue = .none) throws -> Tensor {
        precondition(epilogue.residual == nil, "a linear layer's epilogue takes no residual")
        let (relu, upper, activation) = Self.registers(epilogue)
        guard x.rank == 2, x.shape[1] == inFeatures else {
            throw TensorError("linear input \(x.shape) does not match weight [\(outFeatures), \(inFeatures)]")
        }
        let n = x.shape[0]
        let y = Tensor(uninitialized: [n, outFeatures])
        let geometry = Geometry(
            k: inFeatures, o: outFeatures, relu: relu, upper: upper, offsets: nil, plane: 0, blocks: 0, residual: nil)
        #if KDTOOL_AVX512
            if lanes == 16 {
                run(SIMD16<Float>.self, x, y.pointer, geometry)
                if activation != nil { epilogue.apply(to: y) }
                return y
            }
        #endif
        run(SIMD8<Float>.self, x, y.pointer, geometry)
        if activation != nil { epilogue.apply(to: y) }
        return y
    }

    /// Pixel rows `[N·H·W, I]` (`BlockedTensor.pixelRows()`'s order) → a blocked `[N, O, H, W]`
    /// with halo `pad`, each tile stored straight into the blocked layout: no `[N·H·W, O]` rows
    /// written and gathered again (efficientnet-lite0's 4 × 4 expansions write 1152 channels into
    /// 8 × 8 planes). The epilogue must satisfy `storesBlocked`; its residual (the output's shape) is
    /// added in registers before the activation, as the rows path adds it on the way back. The
    /// same bits as the rows path.
    public func callAsFunction(_ x: Tensor, _ epilogue: Epilogue, n: Int, h: Int, w: Int, pad: Int) throws -> BlockedTensor {
        precondition(Self.storesBlocked(epilogue), "a blocked linear output takes no activation pass")
        let (relu, upper, _) = Self.registers(epilogue)
        guard x.rank == 2, x.shape[1] == inFeatures, x.shape[0] == n * h * w else {
            throw TensorError(
                "linear input \(x.shape) does not match weight [\(outFeatures), \(inFeatures)] over \(n) × \(h) × \(w) pixels")
        }
        if let r = epilogue.residual, r.n != n || r.channels != outFeatures || r.h != h || r.w != w {
            throw TensorError("residual \([r.n, r.channels, r.h, r.w]) does not match the linear output [\(n), \(outFeatures), \(h), \(w)]")
        }
        let out = BlockedTensor(uninitialized: n, channels: outFeatures, h: h, w: w, pad: pad)
        // The residual in the output's layout (its halo re-padded where it differs), read at each
        // output's own offset.
        let shortcut = epilogue.residual?.withPad(pad)
        // Each row's pixel in the output, from the origin.
        var offsets = [Int](repeating: 0, count: n * h * w)
        for img in 0..<n {
            for i in 0..<h {
                for j in 0..<w { offsets[(img * h + i) * w + j] = img * out.imageStride + i * out.rowStride + j * 8 }
            }
        }
        offsets.withUnsafeBufferPointer { table in
            let geometry = Geometry(
                k: inFeatures, o: outFeatures, relu: relu, upper: upper, offsets: table.baseAddress, plane: out.planeStride,
                blocks: out.blocks, residual: shortcut?.origin)
            #if KDTOOL_AVX512
                if lanes == 16 {
                    run(SIMD16<Float>.self, x, out.origin, geometry)
                    return
                }
            #endif
            run(SIMD8<Float>.self, x, out.origin, geometry)
        }
        withExtendedLifetime(shortcut) {}
        return out
    }

    /// Rows and vectors per tile: at most 24 accumulators (AVX-512) or 12 (AVX2). More rows when
    /// there are many (each weight vector then serves more of them), more vectors when there are few.
    static func tile(rows: Int, vectors: Int, lanes: Int) -> (rows: Int, vectors: Int) {
        let most = lanes == 16 ? 24 : 12
        let b = min(vectors, widest(lanes: lanes))
        return (max(1, min(rows, most / b, 12)), b)
    }

    /// The most vectors in a group (and a tile): four of 16 lanes (24 accumulators, 4 weight
    /// vectors and a broadcast in AVX-512's 32 registers), three of 8 (12 + 3 + 1 in AVX2's 16). An
    /// AVX2 tile of 3 rows × 4 vectors needs 17 registers and spilled: mobilenetv2's 320 → 1280 head
    /// at batch 64 ran at 93 GFLOP/s, and at 142 as 4 rows × 3 vectors (AVX2 build on an AVX-512 CPU).
    static func widest(lanes: Int) -> Int { lanes == 16 ? 4 : 3 }

    /// How many groups of at most `widest` vectors the outputs make (every tile's vectors are one group):
    /// an even count where there are several, so that two workers take the same number of vectors
    /// (12 vectors as 3 + 3 + 3 + 3, not 4 + 4 + 4: efficientnet-lite0's 672 → 192 and 1152 → 192
    /// layers on 4 × 4 split their 9 tiles 4 + 5, and ran 0.9× and 1.4× as fast on two threads as on one).
    static func groups(vectors: Int, lanes: Int) -> Int {
        let most = widest(lanes: lanes)
        let g = (vectors + most - 1) / most
        return g > 1 && g % 2 == 1 && g < vectors ? g + 1 : g
    }

    /// Group g's first vector and vector count: even splits (8 vectors as 4 + 4, 5 as 2 + 3).
    static func group(_ g: Int, of groups: Int, vectors: Int) -> (first: Int, count: Int) {
        let v0 = vectors * g / groups
        return (v0, vectors * (g + 1) / groups - v0)
    }

    /// The tiles of `rows` rows over `vectors` output vectors, in order: each group's row tiles
    /// (even splits, 16 rows as 8 + 8), the group's rows per tile from its own vector count. A
    /// group of two vectors beside groups of three (mobilenetv2's 160 outputs: 20 vectors of 8
    /// as 3 + 2 + 3 + 2 …) used to take the three-vector tile's rows, 4 × 2 on AVX2: 8 of its 12
    /// accumulators, the input broadcast once per two multiply-adds.
    static func tiles(rows n: Int, vectors: Int, lanes: Int) -> [(group: Int, row: Int, rows: Int, count: Int)] {
        let groups = groups(vectors: vectors, lanes: lanes)
        var tiles: [(group: Int, row: Int, rows: Int, count: Int)] = []
        for g in 0..<groups {
            let count = group(g, of: groups, vectors: vectors).count
            let rowTiles = rowTiles(rows: n, vectors: count, lanes: lanes)
            for t in 0..<rowTiles { tiles.append((g, n * t / rowTiles, n * (t + 1) / rowTiles - n * t / rowTiles, count)) }
        }
        return tiles
    }

    /// How many row tiles `rows` rows take in a group of `count` vectors (as few as its tile allows).
    static func rowTiles(rows n: Int, vectors count: Int, lanes: Int) -> Int {
        let perTile = tile(rows: n, vectors: count, lanes: lanes).rows
        return (n + perTile - 1) / perTile
    }

    /// `y`: the rows' output `[N, O]`, or with `geometry.offsets` the blocked output's origin.
    func run<V: OutputLanes>(_: V.Type, _ x: Tensor, _ y: UnsafeMutablePointer<Float>, _ geometry: Geometry) {
        let (n, k, o) = (x.shape[0], inFeatures, outFeatures)
        let vectors = (o + V.scalarCount - 1) / V.scalarCount
        let groups = Self.groups(vectors: vectors, lanes: V.scalarCount)
        let (xp, yp, wp, bp) = (UnsafePointer(x.pointer), y, UnsafePointer(packed.pointer), UnsafePointer(bias.pointer))
        let threads = n * k * o > 1 << 16 ? Parallel.threads : 1
        // Each worker's tiles (`tiles(rows:vectors:lanes:)`'s, in that order): those whose first
        // multiply-add falls in its equal share of them (rows × vectors; the groups' vectors in
        // order, so a group's tiles start at n × its first vector).
        let total = n * vectors
        let parts = min(threads, groups * n)
        // Vector groups outer, row tiles inner: a group's packed weights (k × 16–64 floats) stay in
        // cache while every row tile reads them, and each worker streams its share of the weights
        // once. Row tiles outer streamed the whole matrix once per tile, from L3 where it was larger
        // than L2 (shufflenetv2's 192 → 1024 head at batch 64: 786 KB per tile of six rows).
        Parallel.chunks(parts, parts: parts) { part, _ in
            let (low, high) = (total * part, total * (part + 1))
            for g in 0..<groups {
                let (v0, count) = Self.group(g, of: groups, vectors: vectors)
                // Skip the groups wholly outside this share.
                guard n * v0 * parts < high, n * (v0 + count) * parts > low else { continue }
                let rowTiles = Self.rowTiles(rows: n, vectors: count, lanes: V.scalarCount)
                for t in 0..<rowTiles {
                    let row = n * t / rowTiles
                    let start = (n * v0 + row * count) * parts
                    guard start >= low, start < high else { continue }
                    let out = geometry.offsets == nil ? yp + row * o : yp
                    geometry.dispatch(
                        V.self, n * (t + 1) / rowTiles - row, count, xp + row * k, wp + v0 * k * V.scalarCount, bp + v0 * V.scalarCount,
                        out, v0, row)
                }
            }
        }
    }

    struct Geometry {
        let k: Int
        let o: Int
        let relu: Bool
        /// With `relu`: the ceiling of a clip to [0, upper] (ReLU6), infinity for a plain ReLU.
        let upper: Float
        /// For a blocked output: each row's pixel from the origin, the floats from one channel
        /// block's plane to the next, and the blocks (⌈O/8⌉; channels past O are stored as zero).
        let offsets: UnsafePointer<Int>?
        let plane: Int
        let blocks: Int
        /// For a blocked output: the residual's origin, laid out as the output, or nil.
        let residual: UnsafeMutablePointer<Float>?

        @inline(__always)
        func dispatch<V: OutputLanes>(
            _: V.Type, _ rows: Int, _ count: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
            _ y: UnsafeMutablePointer<Float>, _ v0: Int, _ r0: Int
        ) {
            switch (rows, count) {
            case (1, 1): run(V.self, Px1.self, Blocks1.self, x, w, b, y, v0, r0)
            case (1, 2): run(V.self, Px1.self, Blocks2.self, x, w, b, y, v0, r0)
            case (1, 3): run(V.self, Px1.self, Blocks3.self, x, w, b, y, v0, r0)
            case (1, 4): run(V.self, Px1.self, Blocks4.self, x, w, b, y, v0, r0)
            case (2, 1): run(V.self, Px2.self, Blocks1.self, x, w, b, y, v0, r0)
            case (2, 2): run(V.self, Px2.self, Blocks2.self, x, w, b, y, v0, r0)
            case (2, 3): run(V.self, Px2.self, Blocks3.self, x, w, b, y, v0, r0)
            case (2, 4): run(V.self, Px2.self, Blocks4.self, x, w, b, y, v0, r0)
            case (3, 1): run(V.self, Px3.self, Blocks1.self, x, w, b, y, v0, r0)
            case (3, 2): run(V.self, Px3.self, Blocks2.self, x, w, b, y, v0, r0)
            case (3, 3): run(V.self, Px3.self, Blocks3.self, x, w, b, y, v0, r0)
            case (3, 4): run(V.self, Px3.self, Blocks4.self, x, w, b, y, v0, r0)
            case (4, 1): run(V.self, Px4.self, Blocks1.self, x, w, b, y, v0, r0)
            case (4, 2): run(V.self, Px4.self, Blocks2.self, x, w, b, y, v0, r0)
            case (4, 3): run(V.self, Px4.self, Blocks3.self, x, w, b, y, v0, r0)
            case (4, 4): run(V.self, Px4.self, Blocks4.self, x, w, b, y, v0, r0)
            case (5, 1): run(V.self, Px5.self, Blocks1.self, x, w, b, y, v0, r0)
            case (5, 2): run(V.self, Px5.self, Blocks2.self, x, w, b, y, v0, r0)
            case (5, 3): run(V.self, Px5.self, Blocks3.self, x, w, b, y, v0, r0)
            case (5, 4): run(V.self, Px5.self, Blocks4.self, x, w, b, y, v0, r0)
            case (6, 1): run(V.self, Px6.self, Blocks1.self, x, w, b, y, v0, r0)
            case (6, 2): run(V.self, Px6.self, Blocks2.self, x, w, b, y, v0, r0)
            case (6, 3): run(V.self, Px6.self, Blocks3.self, x, w, b, y, v0, r0)
            case (6, 4): run(V.self, Px6.self, Blocks4.self, x, w, b, y, v0, r0)
            case (7, 1): run(V.self, Px7.self, Blocks1.self, x, w, b, y, v0, r0)
            case (7, 2): run(V.self, Px7.self, Blocks2.self, x, w, b, y, v0, r0)
            case (7, 3): run(V.self, Px7.self, Blocks3.self, x, w, b, y, v0, r0)
            case (8, 1): run(V.self, Px8.self, Blocks1.self, x, w, b, y, v0, r0)
            case (8, 2): run(V.self, Px8.self, Blocks2.self, x, w, b, y, v0, r0)
            case (8, 3): run(V.self, Px8.self, Blocks3.self, x, w, b, y, v0, r0)
            case (9, 1): run(V.self, Px9.self, Blocks1.self, x, w, b, y, v0, r0)
            case (9, 2): run(V.self, Px9.self, Blocks2.self, x, w, b, y, v0, r0)
            case (10, 1): run(V.self, Px10.self, Blocks1.self, x, w, b, y, v0, r0)
            case (10, 2): run(V.self, Px10.self, Blocks2.self, x, w, b, y, v0, r0)
            case (11, 1): run(V.self, Px11.self, Blocks1.self, x, w, b, y, v0, r0)
            case (11, 2): run(V.self, Px11.self, Blocks2.self, x, w, b, y, v0, r0)
            case (12, 1): run(V.self, Px12.self, Blocks1.self, x, w, b, y, v0, r0)
            case (12, 2): run(V.self, Px12.self, Blocks2.self, x, w, b, y, v0, r0)
            default: preconditionFailure("no \(rows)-row × \(count)-vector linear tile")
            }
        }

        /// `R.count` rows × `B.count` vectors of outputs, the accumulators in registers.
        func run<V: OutputLanes, R: TilePixels, B: TileBlocks>(
            _: V.Type, _: R.Type, _: B.Type, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
            _ y: UnsafeMutablePointer<Float>, _ v0: Int, _ r0: Int
        ) {
            let (nr, nb, lanes) = (R.count, B.count, V.scalarCount)
            var acc = InlineArray<24, V> { _ in V() }
            for j in 0..<nb {
                let bias = V.load(b + j * lanes)
                for r in 0..<nr { acc[j * nr + r] = bias }
            }
            // The group's vectors are interleaved by input feature: one sequential stream.
            let step = nb &* lanes
            for i in 0..<k {
                var wv = InlineArray<4, V>(repeating: V())
                for j in 0..<nb { wv[j] = V.load(w + (i &* step &+ j &* lanes)) }
                for r in 0..<nr {
                    let v = V(repeating: x[r &* k &+ i])
                    for j in 0..<nb { acc[j * nr + r].addProduct(v, wv[j]) }
                }
            }
            for j in 0..<nb {
                let first = (v0 + j) * lanes
                let full = first + lanes <= o
                for r in 0..<nr {
                    var a = acc[j * nr + r]
                    if let offsets {
                        // Channel c of the row's pixel: block c / 8's plane, lane c % 8.
                        let at = offsets[r0 &+ r] &+ (first / 8) &* plane
                        if let residual {
                            if full {
                                a += V.load(residual + at, blockStride: plane)
                            } else {
                                for l in 0..<(o - first) { a[l] += residual[at + (l / 8) * plane + l % 8] }
                            }
                        }
                        let v = relu ? (upper < .infinity ? a.relu(upTo: upper) : a.relu()) : a
                        let out = y + at
                        if full {
                            v.store(out, blockStride: plane)
                        } else {
                            for l in 0..<min(lanes, blocks * 8 - first) { out[(l / 8) * plane + l % 8] = first + l < o ? v[l] : 0 }
                        }
                        continue
                    }
                    let v = relu ? (upper < .infinity ? a.relu(upTo: upper) : a.relu()) : a
                    let out = y + r * o + first
                    if full {
                        v.storeContiguous(out)
                    } else {
                        for l in 0..<(o - first) { out[l] = v[l] }
                    }
                }
            }
        }
    }
}
