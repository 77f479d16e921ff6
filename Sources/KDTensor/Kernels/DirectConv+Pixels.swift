/// A network's first convolution (one to four NCHW input channels, stride 1) vectorised over
/// output pixels instead of output channels.
///
/// Over output channels, such a layer multiplies one broadcast input value per FMA and fills
/// only as many lanes as it has outputs (LeNet-5's 6 of 8): the kernel is bound by loads, at a
/// fifth of the machine's FMA rate. Here a vector holds `V.scalarCount` consecutive output pixels of
/// one channel: each tap loads one input vector per output row and multiplies it by each
/// channel's weight, held in a register across the rows, so a tile of R rows × K channels costs
/// R + K loads for R·K FMAs, with every lane useful. The price is the store: a vector of one
/// channel's pixels is scattered into the blocked output lane by lane.
///
/// So it pays only where the channel kernel wastes lanes, and only with 16-pixel vectors:
/// measured at batch 64 on one thread, LeNet-5's first layer (6 outputs) took 0.45–0.69 ms here
/// against 0.62–1.15 on the channel kernel, but ResNet's (16 outputs, every channel lane used)
/// 1.9–2.5 ms against 1.2–1.9, and with 8-pixel vectors (AVX2) LeNet-5's took 1.21–1.29 ms
/// against 0.77–1.09.
extension DirectConv {
    /// Whether a convolution with these channels takes the pixel kernel (when the geometry allows,
    /// `pixelPathApplies`): NCHW input, an AVX-512 build, outputs that leave channel lanes empty.
    static func pixelKernelFits(inBlock: Int, outChannels: Int, lanes: Int) -> Bool {
        VectorUnits.wide && inBlock == 1 && outChannels % lanes != 0
    }

    /// Whether `run` takes the pixel-vectorised path for this geometry: no padding left (the
    /// caller pads), unit stride and dilation, no residual, rows at least one vector wide.
    func pixelPathApplies(g: Window, wo: Int, residual: BlockedTensor?) -> Bool {
        pixelPath && g.stride == (1, 1) && g.dilation == (1, 1) && g.pads.allSatisfy { $0 == 0 } && residual == nil && wo >= 16
    }

    /// Output channels per tile and rows per tile: K·R ≤ 24 accumulators, K weights and one input
    /// vector beside them within the 32 vector registers.
    static func pixelTile(channels: Int) -> (channels: Int, rows: Int) {
        (min(channels, 8), min(channels, 8) <= 6 ? 4 : 3)
    }

    func runPixels<V: OutputLanes>(_: V.Type, _ x: Input, ho: Int, wo: Int, relu: Bool, y: BlockedTensor) {
        let (kh, kw, o) = (kh, kw, outChannels)
        let lanes = V.scalarCount
        let tile = Self.pixelTile(channels: o)
        // Channel groups as even as possible (16 = 8 + 8, 20 = 7 + 7 + 6), rows likewise.
        let groups = (o + tile.channels - 1) / tile.channels
        let rowTiles = (ho + tile.rows - 1) / tile.rows
        // Column spans of `lanes` pixels; the last one overlaps its neighbour rather than running short.
        let spans = (0..<((wo + lanes - 1) / lanes)).map { min($0 * lanes, wo - lanes) }
        let wts = UnsafePointer(packed.pointer)
        let bias = UnsafePointer(bias.pointer)
        let (out, outPlane, outRow) = (y.origin, y.planeStride, y.rowStride)
        let packedLanes = self.lanes
        let geometry = PixelTile(
            inPlane: x.planeStride, inRow: x.rowStride, kh: kh, kw: kw, inChannels: inChannels, outChannels: o, outPlane: outPlane,
            outRow: outRow,
            relu: relu, upper: upper, weightStride: kh * kw * packedLanes, packedLanes: packedLanes)
        Parallel.chunks(x.n * rowTiles) { _, range in
            for u in range {
                let (img, t) = (u / rowTiles, u % rowTiles)
                let r0 = ho * t / rowTiles
                let rows = ho * (t + 1) / rowTiles - r0
                for gi in 0..<groups {
                    let o0 = o * gi / groups
                    let k = o * (gi + 1) / groups - o0
                    for oj in spans {
                        geometry.dispatch(
                            V.self, rows: rows, channels: k, x: x.base + img * x.imageStride + r0 * x.rowStride + oj, o0: o0, w: wts,
                            bias: bias, d: out + img * outBlocks * outPlane + r0 * outRow + oj * 8)
                    }
                }
                // The last block's lanes past the output channels are zero in the blocked layout
                // (the transposed store writes them itself).
                if o % 8 != 0 && !(V.self == SIMD16<Float>.self && geometry.wholeBlock(o0: o - o % 8, channels: o % 8) && groups == 1) {
                    let last = out + (img * outBlocks + outBlocks - 1) * outPlane + r0 * outRow
                    for r in 0..<rows { for j in 0..<wo { for lane in (o % 8)..<8 { last[r * outRow + j * 8 + lane] = 0 } } }
                }
            }
        }
    }

    /// Strides of one pixel-vectorised convolution, in floats.
    struct PixelTile {
        let inPlane: Int
        let inRow: Int
        let kh: Int
        let kw: Int
        let inChannels: Int
        let outChannels: Int
        /// Floats from one output block's plane to the next and from one output row to the next.
        let outPlane: Int
        let outRow: Int
        let relu: Bool
        /// With `relu`: the ceiling of a clip to [0, upper] (ReLU6), infinity for a plain ReLU.
        let upper: Float
        /// Packed weights: channel o, input c, tap k at ((o / L · C + c) · kh·kw + k) · L + o % L.
        let weightStride: Int
        let packedLanes: Int

        @inline(__always)
        func dispatch<V: OutputLanes>(
            _: V.Type, rows: Int, channels: Int, x: UnsafePointer<Float>, o0: Int, w: UnsafePointer<Float>, bias: UnsafePointer<Float>,
            d: UnsafeMutablePointer<Float>
        ) {
            switch (rows, channels) {
            case (1, 1): run(V.self, Px1.self, Px1.self, x, o0, w, bias, d)
            case (1, 2): run(V.self, Px1.self, Px2.self, x, o0, w, bias, d)
            case (1, 3): run(V.self, Px1.self, Px3.self, x, o0, w, bias, d)
            case (1, 4): run(V.self, Px1.self, Px4.self, x, o0, w, bias, d)
            case (1, 5): run(V.self, Px1.self, Px5.self, x, o0, w, bias, d)
            case (1, 6): run(V.self, Px1.self, Px6.self, x, o0, w, bias, d)
            case (1, 7): run(V.self, Px1.self, Px7.self, x, o0, w, bias, d)
            case (1, 8): run(V.self, Px1.self, Px8.self, x, o0, w, bias, d)
            case (2, 1): run(V.self, Px2.self, Px1.self, x, o0, w, bias, d)
            case (2, 2): run(V.self, Px2.self, Px2.self, x, o0, w, bias, d)
            case (2, 3): run(V.self, Px2.self, Px3.self, x, o0, w, bias, d)
            case (2, 4): run(V.self, Px2.self, Px4.self, x, o0, w, bias, d)
            case (2, 5): run(V.self, Px2.self, Px5.self, x, o0, w, bias, d)
            case (2, 6): run(V.self, Px2.self, Px6.self, x, o0, w, bias, d)
            case (2, 7): run(V.self, Px2.self, Px7.self, x, o0, w, bias, d)
            case (2, 8): run(V.self, Px2.self, Px8.self, x, o0, w, bias, d)
            case (3, 1): run(V.self, Px3.self, Px1.self, x, o0, w, bias, d)
            case (3, 2): run(V.self, Px3.self, Px2.self, x, o0, w, bias, d)
            case (3, 3): run(V.self, Px3.self, Px3.self, x, o0, w, bias, d)
            case (3, 4): run(V.self, Px3.self, Px4.self, x, o0, w, bias, d)
            case (3, 5): run(V.self, Px3.self, Px5.self, x, o0, w, bias, d)
            case (3, 6): run(V.self, Px3.self, Px6.self, x, o0, w, bias, d)
            case (3, 7): run(V.self, Px3.self, Px7.self, x, o0, w, bias, d)
            case (3, 8): run(V.self, Px3.self, Px8.self, x, o0, w, bias, d)
            case (4, 1): run(V.self, Px4.self, Px1.self, x, o0, w, bias, d)
            case (4, 2): run(V.self, Px4.self, Px2.self, x, o0, w, bias, d)
            case (4, 3): run(V.self, Px4.self, Px3.self, x, o0, w, bias, d)
            case (4, 4): run(V.self, Px4.self, Px4.self, x, o0, w, bias, d)
            case (4, 5): run(V.self, Px4.self, Px5.self, x, o0, w, bias, d)
            case (4, 6): run(V.self, Px4.self, Px6.self, x, o0, w, bias, d)
            default: preconditionFailure("no \(rows)-row × \(channels)-channel pixel tile")
            }
        }

        /// The accumulators of `R.count` output rows × `K.count` output channels (from `o0`) × one
        /// vector of pixels, the bias included: channel k, row r at k·R + r.
        @inline(__always)
        func accumulate<V: OutputLanes, R: TilePixels, K: TilePixels>(
            _: V.Type, _: R.Type, _: K.Type, _ x: UnsafePointer<Float>, _ o0: Int, _ w: UnsafePointer<Float>,
            _ bias: UnsafePointer<Float>
        ) -> InlineArray<24, V> {
            let (nr, nk) = (R.count, K.count)
            var acc = InlineArray<24, V> { _ in V() }
            for k in 0..<nk {
                let b = V(repeating: bias[o0 + k])
                for r in 0..<nr { acc[k * nr + r] = b }
            }
            // One loop over (input channel, kernel row), then the kernel columns: with the columns
            // innermost the accumulators stay in registers (the channel-vectorised kernel above has
            // the same shape of loops for the same reason).
            let rowsOfTaps = inChannels &* kh
            let (ob0, lane0) = (o0 / packedLanes, o0 % packedLanes)
            // Channel o0 + k's weights: the packing's lanes run on into the next block's. The
            // offsets are worked out once per tile rather than once per tap.
            let nextBlock: Int = weightStride &* inChannels &- packedLanes
            var offsets = InlineArray<8, Int>(repeating: 0)
            for k in 0..<nk { offsets[k] = k &+ ((lane0 &+ k) / packedLanes) &* nextBlock }
            var (c, ki) = (0, 0)
            for _ in 0..<rowsOfTaps {
                let rowIn = x + (c &* inPlane &+ ki &* inRow)
                let tapRow: Int = (ob0 &* inChannels &+ c) &* kh &+ ki
                let wRow = w + (tapRow &* kw &* packedLanes &+ lane0)
                for kj in 0..<kw {
                    let px = rowIn + kj
                    let wq = wRow + kj &* packedLanes
                    var wv = InlineArray<8, V>(repeating: V())
                    for k in 0..<nk { wv[k] = V(repeating: wq[offsets[k]]) }
                    for r in 0..<nr {
                        let v = V.load(px + r &* inRow)
                        for k in 0..<nk { acc[k * nr + r].addProduct(v, wv[k]) }
                    }
                }
                ki &+= 1
                if ki == kh {
                    ki = 0
                    c &+= 1
                }
            }
            return acc
        }

        /// `R.count` output rows × `K.count` output channels (from `o0`) × one vector of pixels.
        func run<V: OutputLanes, R: TilePixels, K: TilePixels>(
            _: V.Type, _: R.Type, _: K.Type, _ x: UnsafePointer<Float>, _ o0: Int, _ w: UnsafePointer<Float>,
            _ bias: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>
        ) {
            let (nr, nk) = (R.count, K.count)
            let acc = accumulate(V.self, R.self, K.self, x, o0, w, bias)
            #if KDTOOL_AVX512
                if V.self == SIMD16<Float>.self, wholeBlock(o0: o0, channels: nk) {
                    // The tile's channels are one whole output block: per row, its (up to) eight
                    // vectors of 16 pixels are transposed in registers into 16 pixels × 8 channels,
                    // eight contiguous stores instead of 128 scattered ones (the lanes past the
                    // output channels get zeros, as the layout wants).
                    let plane = d + (o0 / 8) * outPlane
                    for r in 0..<nr {
                        var rows = InlineArray<8, SIMD16<Float>>(repeating: SIMD16())
                        for k in 0..<nk {
                            let v = unsafeBitCast(acc[k * nr + r], to: SIMD16<Float>.self)
                            rows[k] = relu ? (upper < .infinity ? v.relu(upTo: upper) : v.relu()) : v
                        }
                        Self.storeTransposed(rows, plane + r * outRow)
                    }
                    return
                }
            #endif
            for k in 0..<nk {
                let oc = o0 + k
                let plane = d + (oc / 8) * outPlane + oc % 8
                for r in 0..<nr {
                    let v = relu ? (upper < .infinity ? acc[k * nr + r].relu(upTo: upper) : acc[k * nr + r].relu()) : acc[k * nr + r]
                    let row = plane + r * outRow
                    for p in 0..<V.scalarCount { row[p * 8] = v[p] }
                }
            }
        }

        /// Whether channels o0..<o0+channels are an output block, all of it or all that the layer has.
        func wholeBlock(o0: Int, channels: Int) -> Bool {
            o0 % 8 == 0 && (channels == 8 || o0 + channels == outChannels)
        }

        /// (x, y) interleaved: [x0, y0, x1, y1, …] from the low halves and from the high ones.
        @inline(__always)
        static func interleave(_ x: SIMD16<Float>, _ y: SIMD16<Float>) -> (SIMD16<Float>, SIMD16<Float>) {
            var (lo, hi) = (SIMD16<Float>(), SIMD16<Float>())
            lo.evenHalf = x.lowHalf
            lo.oddHalf = y.lowHalf
            hi.evenHalf = x.highHalf
            hi.oddHalf = y.highHalf
            return (lo, hi)
        }

        /// Eight channels' rows of 16 pixels (`c[k]` channel k) stored as 16 pixels × 8 channels at
        /// `d`: three rounds of interleaving (channels k and k + 4, then k and k + 2, then k and
        /// k + 1) turn channel-major into pixel-major.
        @inline(__always)
        static func storeTransposed(_ c: InlineArray<8, SIMD16<Float>>, _ d: UnsafeMutablePointer<Float>) {
            // Round 1: (0,4) (1,5) (2,6) (3,7); lo halves hold pixels 0–7, hi 8–15.
            let (a0, a1) = interleave(c[0], c[4])
            let (b0, b1) = interleave(c[1], c[5])
            let (e0, e1) = interleave(c[2], c[6])
            let (f0, f1) = interleave(c[3], c[7])
            // Round 2: channel pairs (0,4) with (2,6), (1,5) with (3,7); quarters of the pixels.
            let (g0, g1) = interleave(a0, e0)  // pixels 0–3, 4–7 of channels 0 2 4 6
            let (g2, g3) = interleave(a1, e1)  // pixels 8–11, 12–15
            let (h0, h1) = interleave(b0, f0)  // the same of channels 1 3 5 7
            let (h2, h3) = interleave(b1, f1)
            // Round 3: even channels with odd: two pixels × eight channels per vector.
            @inline(__always) func store(_ i: Int, _ g: SIMD16<Float>, _ h: SIMD16<Float>) {
                let (lo, hi) = interleave(g, h)
                UnsafeMutableRawPointer(d + i * 32).storeBytes(of: lo, as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(d + i * 32 + 16).storeBytes(of: hi, as: SIMD16<Float>.self)
            }
            store(0, g0, h0)
            store(1, g1, h1)
            store(2, g2, h2)
            store(3, g3, h3)
        }
    }
}
