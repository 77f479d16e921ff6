/// A first convolution on the pixel kernel, its ReLU and the 2×2, stride-2 max pool after it, in
/// one pass, from NCHW to NCHW (LeNet-5's conv1 → relu1 → pool1).
///
/// The pixel kernel holds, per output channel, a vector of 16 pixels for each of its rows. Storing
/// that into the blocked layout takes a transpose in registers, which cost more than the
/// multiply-adds (measured: 60 % of LeNet-5's first layer in `perf annotate`, the tap loop 28 %),
/// and the pool then reads the whole output back. Here the tile's rows are maxed in pairs, the
/// pairs of columns by splitting even from odd lanes, and ReLU goes after the pool (max
/// commutes with it, and the bias is added before): per channel and pair of row pairs it is a
/// few vector operations, and the tile stores 8 pooled pixels per output row of each channel,
/// contiguous in NCHW. The next convolution reads that NCHW input as it is.
extension DirectConv {
    /// Whether `pooled(plain:_:)` runs fused for inputs of `h` × `w` pixels: the pixel kernel
    /// (an AVX-512 build, NCHW input, outputs that leave channel lanes empty), stride 1, and a
    /// convolution output at least 16 pixels wide and 2 high.
    public func poolFuses(h: Int, w: Int) -> Bool {
        #if KDTOOL_AVX512
            let p = window.pads
            let (ho, wo) = (h + p[0] + p[2] - kh + 1, w + p[1] + p[3] - kw + 1)
            return pixelPath && window.stride == (1, 1) && window.dilation == (1, 1) && ho >= 2 && wo / 2 * 2 >= 16
        #else
            return false
        #endif
    }

    /// The 2×2 windows a pool at stride 2 takes over the convolution's output.
    public static let pool2x2 = Window(kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0])

    /// max_pool(2×2, stride 2)(epilogue(conv(x))) of an NCHW input, as NCHW `[N, O, ⌊Ho/2⌋, ⌊Wo/2⌋]`.
    /// NaN propagates as in `BlockedTensor.maxPool`. Where `poolFuses` does not hold (or the
    /// epilogue is more than a ReLU), it runs the three steps one after the other (with the same result).
    public func pooled(plain x: Tensor, _ epilogue: Epilogue = .none) throws -> Tensor {
        guard x.rank == 4, x.shape[1] == inChannels else {
            throw TensorError("conv2d input \(x.shape) does not match \(inChannels) input channels")
        }
        #if KDTOOL_AVX512
            if poolFuses(h: x.shape[2], w: x.shape[3]), epilogue.activation == nil, epilogue.residual == nil {
                let (input, storage) = paddedPlain(x)
                let (ho, wo) = (input.h - kh + 1, input.w - kw + 1)
                let y = Tensor(uninitialized: [x.shape[0], outChannels, ho / 2, wo / 2])
                withExtendedLifetime(storage) { runPooled(input, ho: ho, wo: wo, relu: epilogue.isReLU, y: y) }
                return y
            }
        #endif
        return try self(plain: x, epilogue).maxPool(Self.pool2x2).plain()
    }

    #if KDTOOL_AVX512
        func runPooled(_ x: Input, ho: Int, wo: Int, relu: Bool, y: Tensor) {
            let (kh, kw, o) = (kh, kw, outChannels)
            let (hp, wp) = (ho / 2, wo / 2)
            // Up to 6 channels × 4 rows (24 accumulators), else up to 8 × 2.
            let tileChannels = min(o, 8)
            let pairs = tileChannels <= 6 ? 2 : 1
            let groups = (o + tileChannels - 1) / tileChannels
            let rowTiles = (hp + pairs - 1) / pairs
            // Spans of 16 conv pixels (8 pooled) starting on even columns; the last one overlaps
            // its neighbour rather than running short.
            let spans = (0..<((2 * wp + 15) / 16)).map { min($0 * 16, 2 * wp - 16) }
            let wts = UnsafePointer(packed.pointer)
            let bias = UnsafePointer(bias.pointer)
            let out = y.pointer
            let geometry = PixelTile(
                inPlane: x.planeStride, inRow: x.rowStride, kh: kh, kw: kw, inChannels: inChannels, outChannels: o, outPlane: hp * wp,
                outRow: wp, relu: relu, upper: .infinity, weightStride: kh * kw * lanes, packedLanes: lanes)
            Parallel.chunks(x.n * rowTiles) { _, range in
                for u in range {
                    let (img, t) = (u / rowTiles, u % rowTiles)
                    let p0 = hp * t / rowTiles
                    let count = hp * (t + 1) / rowTiles - p0
                    for gi in 0..<groups {
                        let o0 = o * gi / groups
                        let k = o * (gi + 1) / groups - o0
                        for oj in spans {
                            geometry.dispatchPooled(
                                pairs: count, channels: k, x: x.base + img * x.imageStride + 2 * p0 * x.rowStride + oj, o0: o0, w: wts,
                                bias: bias, d: out + ((img * o + o0) * hp + p0) * wp + oj / 2)
                        }
                    }
                }
            }
        }
    #endif
}

#if KDTOOL_AVX512
    extension DirectConv.PixelTile {
        @inline(__always)
        func dispatchPooled(
            pairs: Int, channels: Int, x: UnsafePointer<Float>, o0: Int, w: UnsafePointer<Float>, bias: UnsafePointer<Float>,
            d: UnsafeMutablePointer<Float>
        ) {
            switch (pairs, channels) {
            case (1, 1): pooled(Px2.self, Px1.self, x, o0, w, bias, d)
            case (1, 2): pooled(Px2.self, Px2.self, x, o0, w, bias, d)
            case (1, 3): pooled(Px2.self, Px3.self, x, o0, w, bias, d)
            case (1, 4): pooled(Px2.self, Px4.self, x, o0, w, bias, d)
            case (1, 5): pooled(Px2.self, Px5.self, x, o0, w, bias, d)
            case (1, 6): pooled(Px2.self, Px6.self, x, o0, w, bias, d)
            case (1, 7): pooled(Px2.self, Px7.self, x, o0, w, bias, d)
            case (1, 8): pooled(Px2.self, Px8.self, x, o0, w, bias, d)
            case (2, 1): pooled(Px4.self, Px1.self, x, o0, w, bias, d)
            case (2, 2): pooled(Px4.self, Px2.self, x, o0, w, bias, d)
            case (2, 3): pooled(Px4.self, Px3.self, x, o0, w, bias, d)
            case (2, 4): pooled(Px4.self, Px4.self, x, o0, w, bias, d)
            case (2, 5): pooled(Px4.self, Px5.self, x, o0, w, bias, d)
            case (2, 6): pooled(Px4.self, Px6.self, x, o0, w, bias, d)
            default: preconditionFailure("no \(pairs)-pair × \(channels)-channel pooled tile")
            }
        }

        /// max(a, b) lane by lane, NaN if either is.
        @inline(__always)
        static func maxNaN(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
            a.replacing(with: b, where: (b .> a) .| (b .!= b))
        }

        /// The even lanes of a, then the even lanes of b (odd: from lane 1).
        @inline(__always)
        static func lanes(_ a: SIMD16<Float>, _ b: SIMD16<Float>, from f: Int) -> SIMD16<Float> {
            SIMD16(
                a[f], a[f + 2], a[f + 4], a[f + 6], a[f + 8], a[f + 10], a[f + 12], a[f + 14],
                b[f], b[f + 2], b[f + 4], b[f + 6], b[f + 8], b[f + 10], b[f + 12], b[f + 14])
        }

        /// `R.count` (2 or 4) convolution rows × `K.count` channels × 16 pixels, pooled into
        /// R/2 rows × 8 pixels per channel at `d` (channel o0's pooled plane).
        func pooled<R: TilePixels, K: TilePixels>(
            _: R.Type, _: K.Type, _ x: UnsafePointer<Float>, _ o0: Int, _ w: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
            _ d: UnsafeMutablePointer<Float>
        ) {
            let (nr, nk) = (R.count, K.count)
            let acc = accumulate(SIMD16<Float>.self, R.self, K.self, x, o0, w, bias)
            // Channel by channel with constant indices (a loop over the channels kept the
            // accumulators in memory and copied them all on every pass).
            @inline(__always) func pool(_ k: Int) {
                guard k < nk else { return }
                let plane = d + k * outPlane
                let top = Self.maxNaN(acc[k * nr], acc[k * nr + 1])
                // Rows 2 and 3 when the tile has them (else row pair 0 twice; its upper half unused).
                let bottom = nr == 4 ? Self.maxNaN(acc[k * nr + 2], acc[k * nr + 3]) : top
                var v = Self.maxNaN(Self.lanes(top, bottom, from: 0), Self.lanes(top, bottom, from: 1))
                if relu { v = v.relu() }
                v.lowHalf.store(plane)
                if nr == 4 { v.highHalf.store(plane + outRow) }
            }
            pool(0)
            pool(1)
            pool(2)
            pool(3)
            pool(4)
            pool(5)
            pool(6)
            pool(7)
        }
    }
#endif
