import Testing

@testable import KDTensor

@Suite("Direct (channel-blocked) convolution")
struct DirectConvTests {
    struct Case: CustomStringConvertible, Sendable {
        let x: [Int]
        let w: [Int]
        let stride: [Int]
        let pads: [Int]
        var dilation = [1, 1]
        var description: String { "x\(x) w\(w) stride\(stride) pads\(pads) dilation\(dilation)" }
    }

    static let cases = [
        Case(x: [3, 1, 28, 28], w: [6, 1, 5, 5], stride: [1, 1], pads: [2, 2, 2, 2]),
        Case(x: [2, 3, 9, 13], w: [16, 3, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        Case(x: [2, 16, 14, 14], w: [32, 16, 3, 3], stride: [2, 2], pads: [1, 1, 1, 1]),
        Case(x: [3, 16, 8, 7], w: [32, 16, 1, 1], stride: [2, 2], pads: [0, 0, 0, 0]),
        Case(x: [2, 6, 12, 12], w: [16, 6, 5, 5], stride: [1, 1], pads: [0, 0, 0, 0]),
        Case(x: [1, 12, 7, 7], w: [20, 12, 3, 3], stride: [1, 1], pads: [1, 0, 2, 1]),
        Case(x: [2, 8, 9, 9], w: [8, 8, 3, 3], stride: [1, 1], pads: [2, 2, 2, 2], dilation: [2, 2]),
        Case(x: [1, 64, 7, 7], w: [64, 64, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        // Rows of 18 pixels and 20 outputs: the pixel kernel's overlapping last span and its
        // channel groups (7 + 7 + 6) that straddle output blocks.
        Case(x: [2, 3, 20, 18], w: [20, 3, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        // Odd numbers of output blocks (3 and 5): with AVX-512, 16-lane vectors whose last holds
        // one block, at the borders, at stride 2 and as 1 × 1.
        Case(x: [2, 16, 9, 11], w: [24, 16, 3, 3], stride: [2, 2], pads: [1, 1, 1, 1]),
        Case(x: [2, 20, 6, 6], w: [40, 20, 1, 1], stride: [1, 1], pads: [0, 0, 0, 0]),
    ]

    static func random(_ shape: [Int], _ rng: inout RandomSource) -> Tensor {
        Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in rng.nextFloat() - 0.5 })
    }

    @Test("matches im2col + sgemm on plain and blocked input, with and without ReLU", arguments: cases)
    func matchesIm2col(c: Case) throws {
        var rng = RandomSource(seed: 3)
        let x = Self.random(c.x, &rng)
        let w = Self.random(c.w, &rng)
        let b = Self.random([c.w[0]], &rng)
        let g = Window(kernel: [c.w[2], c.w[3]], stride: c.stride, pads: c.pads, dilation: c.dilation)
        let reference = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: 1, allowFast: false)
        let scale = max(1, reference.array.map(abs).max() ?? 1)
        for inBlock in [1, 8] {
            for lanes in DirectConv.laneChoices(outChannels: c.w[0], inBlock: inBlock) {
                for pixels in [true, false] {
                    let conv = DirectConv(weight: w, bias: b, window: g, inBlock: inBlock, lanes: lanes, allowPixelPath: pixels)
                    for relu in [false, true] {
                        let y = try conv(plain: x, Epilogue(relu: relu)).plain()
                        #expect(y.shape == reference.shape)
                        let worst = (0..<y.count).map { abs(y[$0] - (relu ? max(0, reference[$0]) : reference[$0])) }.max() ?? 0
                        #expect(
                            worst <= 1e-5 * scale, "inBlock \(inBlock) lanes \(lanes) pixels \(pixels) relu \(relu): max error \(worst)")
                    }
                }
            }
        }
    }

    @Test("Winograd F(2×2, 3×3) and F(4×4, 3×3) match the direct kernel, the same for one or two threads")
    func winograd() throws {
        var rng = RandomSource(seed: 5)
        let g = Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1])
        // Units of part of an image, of one and of several images (the 4×4 images: one tile each),
        // a last unit shorter than the others (3 × 9 tiles), channels that fill no block (5) or
        // several, output vectors alone and in pairs, an image of a single tile row, sizes that
        // are no multiple of the tile.
        for (n, c, o, h, w) in [
            (1, 64, 64, 7, 7), (2, 16, 16, 5, 8), (1, 8, 32, 6, 3), (1, 16, 16, 1, 1), (5, 16, 32, 4, 4), (3, 16, 16, 12, 12),
            (2, 16, 16, 8, 8), (1, 64, 64, 8, 8), (2, 5, 24, 6, 10), (1, 32, 32, 14, 14), (3, 8, 16, 2, 4), (1, 16, 48, 32, 32),
        ] {
            let x = Self.random([n, c, h, w], &rng)
            let wt = Self.random([o, c, 3, 3], &rng)
            let b = Self.random([o], &rng)
            let r = BlockedTensor(Self.random([n, o, h, w], &rng), pad: 1)
            let direct = DirectConv(weight: wt, bias: b, window: g, inBlock: 8)
            let wino = DirectConv(weight: wt, bias: b, window: g, inBlock: 8, winograd: true)
            let kernel = try #require(wino.winograd)
            #expect(direct.winograd == nil)
            let xb = BlockedTensor(x, pad: max(WinogradConv.halo(h: h, w: w, tile: 2), WinogradConv.halo(h: h, w: w, tile: 4)))
            for relu in [false, true] {
                for residual in [nil, r] {
                    for outPad in [0, 1, 2] {
                        let want = try direct(xb, Epilogue(relu: relu, residual: residual), outPad: outPad)
                        for tile in [2, 4] {
                            let got = try kernel(xb, Epilogue(relu: relu, residual: residual), outPad: outPad, tile: tile)
                            #expect(got.pad == outPad)
                            let (a, e) = (got.plain(), want.plain())
                            let scale = max(1, e.array.map(abs).max() ?? 1)
                            let worst = (0..<a.count).map { abs(a[$0] - e[$0]) }.max() ?? 0
                            // Measured worst: 0.8e-6 of the scale for F(2×2), 5.5e-6 for F(4×4), whose
                            // transforms multiply by up to 8 and divide by 24.
                            #expect(
                                worst <= (tile == 2 ? 1e-5 : 3e-5) * scale,
                                "F(\(tile)×\(tile)) \(c)→\(o) at \(h)×\(w), relu \(relu), residual \(residual != nil): max error \(worst) of \(scale)"
                            )
                            // The halo stays zero (the next convolution reads it as padding).
                            #expect(BlockedTensor(a, pad: outPad).data.array == got.data.array)
                        }
                        // Through the direct convolution, the tile size `tile(h:w:)` picks.
                        let picked = try kernel(
                            xb, Epilogue(relu: relu, residual: residual), outPad: outPad, tile: WinogradConv.tile(h: h, w: w))
                        #expect(try wino(xb, Epilogue(relu: relu, residual: residual), outPad: outPad).data.array == picked.data.array)
                    }
                }
            }
            for tile in [2, 4] {
                let one = try kernel(xb, Epilogue(.relu, residual: r), tile: tile).data.array
                Parallel.configure(threads: 2)
                let two = try kernel(xb, Epilogue(.relu, residual: r), tile: tile).data.array
                Parallel.configure(threads: 1)
                #expect(one == two, "F(\(tile)×\(tile)) \(c)→\(o) at \(h)×\(w): two threads give other bits than one")
            }
        }
        // F(4×4, 3×3) where both sides have 3 pixels or more (but 5 × 5), and its halo; an input
        // with too little halo for it takes F(2×2, 3×3).
        #expect([(32, 32), (8, 8), (7, 7), (3, 3), (5, 8)].allSatisfy { WinogradConv.tile(h: $0, w: $1) == 4 })
        #expect([(1, 1), (2, 4), (8, 2), (5, 5)].allSatisfy { WinogradConv.tile(h: $0, w: $1) == 2 })
        #expect(WinogradConv.halo(h: 32, w: 32) == 1 && WinogradConv.halo(h: 7, w: 7) == 2 && WinogradConv.halo(h: 14, w: 14) == 3)
        let k16 = WinogradConv(weight: Self.random([16, 16, 3, 3], &rng), bias: nil)
        for (pad, tile) in [(1, 2), (2, 2), (3, 4)] {
            #expect(k16.tile(for: BlockedTensor(Self.random([1, 16, 14, 14], &rng), pad: pad)) == tile, "halo \(pad)")
        }
        #expect(throws: TensorError.self) { try k16(BlockedTensor(Self.random([1, 16, 14, 14], &rng), pad: 2), tile: 4) }
        // Inputs without the halo they need take the direct kernel, bit for bit.
        let wt = Self.random([16, 16, 3, 3], &rng)
        let direct = DirectConv(weight: wt, bias: nil, window: g, inBlock: 8)
        let wino = DirectConv(weight: wt, bias: nil, window: g, inBlock: 8, winograd: true)
        for (x, pad) in [(Self.random([2, 16, 7, 7], &rng), 1), (Self.random([1, 16, 8, 8], &rng), 0)] {
            let xb = BlockedTensor(x, pad: pad)
            #expect(try wino(xb, .relu).data.array == direct(xb, .relu).data.array)
        }
        // Only 3×3 stride-1 convolutions with padding 1 get one.
        for (k, stride, pad) in [(3, 2, 1), (5, 1, 2), (3, 1, 0), (1, 1, 0)] {
            let conv = DirectConv(
                weight: Self.random([16, 8, k, k], &rng), bias: nil,
                window: Window(kernel: [k, k], stride: [stride, stride], pads: [pad, pad, pad, pad]), inBlock: 8, winograd: true)
            #expect(conv.winograd == nil, "\(k)×\(k) stride \(stride) pad \(pad)")
        }
    }

    @Test("a residual is added before the ReLU; every tile shape is exercised")
    func residual() throws {
        var rng = RandomSource(seed: 11)
        // Widths and block counts that select the 6×2, 4×3, 3×4 and 8×1 tiles (and with AVX-512
        // the 14×1 and 12×2 ones, whole and split), with borders.
        for (c, o, hw) in [(16, 16, 28), (32, 24, 14), (64, 64, 7), (8, 8, 28), (16, 32, 32), (8, 16, 11), (16, 40, 9)] {
            let x = Self.random([2, c, hw, hw], &rng)
            let w = Self.random([o, c, 3, 3], &rng)
            let b = Self.random([o], &rng)
            let r = Self.random([2, o, hw, hw], &rng)
            let g = Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1])
            let conv = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: 1, allowFast: false)
            let want = (0..<conv.count).map { max(0, conv[$0] + r[$0]) }
            for lanes in DirectConv.laneChoices(outChannels: o) {
                let direct = DirectConv(weight: w, bias: b, window: g, inBlock: 8, lanes: lanes)
                let y = try direct(BlockedTensor(x), Epilogue(.relu, residual: BlockedTensor(r))).plain()
                let worst = (0..<y.count).map { abs(y[$0] - want[$0]) }.max() ?? 0
                #expect(worst <= 1e-5 * max(1, want.map(abs).max() ?? 1), "\(c)→\(o) at \(hw)×\(hw), \(lanes) lanes: max error \(worst)")
            }
        }
        #expect(DirectConv.shape(width: 28, blocks: 2) == (6, 2) as (Int, Int))
        #expect(DirectConv.shape(width: 28, blocks: 1) == (8, 1) as (Int, Int))
        #expect(DirectConv.shape(width: 28, blocks: 1, lanes: 16) == (14, 1) as (Int, Int))
        #expect(DirectConv.shape(width: 28, blocks: 4, lanes: 16) == (12, 2) as (Int, Int))
        // Rows of 16 pixels or fewer take 8 × 3 where it reads the input fewer times; wider rows keep 12 × 2.
        #expect(DirectConv.shape(width: 16, blocks: 3, lanes: 16) == (8, 3) as (Int, Int))
        #expect(DirectConv.shape(width: 8, blocks: 7, lanes: 16) == (8, 3) as (Int, Int))
        #expect(DirectConv.shape(width: 32, blocks: 3, lanes: 16) == (12, 2) as (Int, Int))
        // Output blocks take the 512-bit kernel where the build has it: paired, or three or more
        // on blocked input (the last vector half full); one block, or an odd count on NCHW input, cannot.
        let window = Window(kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0])
        let wide = VectorUnits.wide ? 16 : 8
        #expect(DirectConv(weight: Self.random([32, 8, 1, 1], &rng), bias: nil, window: window, inBlock: 8).lanes == wide)
        #expect(DirectConv(weight: Self.random([24, 8, 1, 1], &rng), bias: nil, window: window, inBlock: 8).lanes == wide)
        #expect(DirectConv(weight: Self.random([24, 3, 1, 1], &rng), bias: nil, window: window, inBlock: 1).lanes == 8)
        #expect(DirectConv(weight: Self.random([8, 8, 1, 1], &rng), bias: nil, window: window, inBlock: 8).lanes == 8)
        let mismatched = BlockedTensor(Self.random([1, 8, 5, 5], &rng))
        let conv = DirectConv(
            weight: Self.random([8, 8, 3, 3], &rng), bias: nil, window: Window(kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0]),
            inBlock: 8)
        #expect(throws: TensorError.self) { try conv(mismatched, Epilogue(residual: mismatched)) }
    }

    @Test("the pixel kernel leaves the blocked output's padding lanes zero")
    func pixelPathPadding() throws {
        var rng = RandomSource(seed: 9)
        let x = Self.random([2, 1, 20, 20], &rng)
        for pixels in [true, false] {
            let conv = DirectConv(
                weight: Self.random([6, 1, 5, 5], &rng), bias: Self.random([6], &rng),
                window: Window(kernel: [5, 5], stride: [1, 1], pads: [2, 2, 2, 2]), inBlock: 1, allowPixelPath: pixels)
            // Six outputs leave two of eight channel lanes empty: the pixel kernel's case, in a build that has it.
            #expect(conv.pixelPath == (pixels && VectorUnits.wide))
            let y = try conv(plain: x, .relu)
            let data = y.data.array
            #expect((0..<(data.count / 8)).allSatisfy { data[$0 * 8 + 6] == 0 && data[$0 * 8 + 7] == 0 })
            #expect(data.contains { $0 > 0 })
        }
    }

    /// LeNet-5's first layer; odd sizes (the pool drops the last row and column, the last span
    /// overlaps); 7 and 12 outputs (tiles of one row pair, two channel groups); 20 outputs (groups
    /// across output blocks); a row of 14 (too narrow: the three steps run one by one).
    static let pooledCases = [
        Case(x: [3, 1, 28, 28], w: [6, 1, 5, 5], stride: [1, 1], pads: [2, 2, 2, 2]),
        Case(x: [2, 3, 17, 21], w: [5, 3, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        Case(x: [2, 1, 18, 18], w: [7, 1, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        Case(x: [1, 2, 20, 16], w: [12, 2, 3, 3], stride: [1, 1], pads: [1, 1, 1, 1]),
        Case(x: [2, 3, 19, 40], w: [20, 3, 5, 5], stride: [1, 1], pads: [0, 0, 0, 0]),
        Case(x: [2, 1, 14, 14], w: [6, 1, 5, 5], stride: [1, 1], pads: [2, 2, 2, 2]),
    ]

    @Test("convolution, ReLU and 2×2 max pool fused give the bits of the three steps, NaN included", arguments: pooledCases)
    func pooled(c: Case) throws {
        var rng = RandomSource(seed: 4)
        let x = Self.random(c.x, &rng)
        // A NaN pixel: the pooled windows it reaches are NaN either way.
        x[c.x[2] / 2 * c.x[3] + 3] = .nan
        let g = Window(kernel: [c.w[2], c.w[3]], stride: c.stride, pads: c.pads)
        let conv = DirectConv(weight: Self.random(c.w, &rng), bias: Self.random([c.w[0]], &rng), window: g, inBlock: 1)
        let (ho, wo) = (try g.outputSize(c.x[2], axis: 0), try g.outputSize(c.x[3], axis: 1))
        #expect(conv.poolFuses(h: c.x[2], w: c.x[3]) == (VectorUnits.wide && c.w[0] % conv.lanes != 0 && wo / 2 * 2 >= 16), "\(c)")
        var one: [UInt32] = []
        for relu in [false, true] {
            let fused = try conv.pooled(plain: x, Epilogue(relu: relu))
            one = fused.array.map(\.bitPattern)
            let steps = try conv(plain: x, Epilogue(relu: relu)).maxPool(DirectConv.pool2x2).plain()
            #expect(fused.shape == [c.x[0], c.w[0], ho / 2, wo / 2])
            #expect(fused.array.map(\.bitPattern) == steps.array.map(\.bitPattern), "\(c) relu \(relu)")
            #expect(fused.array.contains { $0.isNaN } && fused.array.contains { $0 > 0 })
        }
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        #expect(try conv.pooled(plain: x, .relu).array.map(\.bitPattern) == one, "\(c): two workers give other bits than one")
    }

    @Test("sliding row tiles give the bits of tap-by-tap ones and match im2col, for 3 and 5 columns and every tile width")
    func sliding() throws {
        var rng = RandomSource(seed: 17)
        // (channels, kernel, output height, output width, pads): widths 5–14 give every tile
        // width of both kernels, whole and split (12 = 6 + 6 for 5 columns, 14 = 7 + 7 for 3),
        // heights of 2 and 3 rows per tile and a last tile of fewer rows; LeNet-5's conv2,
        // resnet8's and resnet20's first layers; a padded input.
        var cases: [(c: Int, k: Int, ho: Int, wo: Int, pad: Int)] = [(6, 5, 10, 10, 0), (1, 3, 28, 28, 1), (3, 3, 32, 32, 1)]
        for k in [3, 5] { for wo in 5...14 { cases.append((wo % 3 + 1, k, wo % 4 + 2, wo, wo == 9 ? k / 2 : 0)) } }
        for c in cases {
            let x = Self.random([2, c.c, c.ho + c.k - 1 - 2 * c.pad, c.wo + c.k - 1 - 2 * c.pad], &rng)
            let w = Self.random([16, c.c, c.k, c.k], &rng)
            let b = Self.random([16], &rng)
            let g = Window(kernel: [c.k, c.k], stride: [1, 1], pads: Array(repeating: c.pad, count: 4))
            let reference = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: 1, allowFast: false)
            let residual = BlockedTensor(Self.random(reference.shape, &rng))
            let slid = DirectConv(weight: w, bias: b, window: g, inBlock: 1, allowSliding: true)
            let tapped = DirectConv(weight: w, bias: b, window: g, inBlock: 1, allowSliding: false)
            #expect(slid.sliding == VectorUnits.wide && !tapped.sliding)
            for (relu, r) in [(false, nil), (true, residual)] as [(Bool, BlockedTensor?)] {
                let y = try slid(plain: x, Epilogue(relu: relu, residual: r)).plain()
                let want = try tapped(plain: x, Epilogue(relu: relu, residual: r)).plain()
                #expect(y.array.map(\.bitPattern) == want.array.map(\.bitPattern), "\(c) relu \(relu)")
                if r == nil {
                    let worst = (0..<y.count).map { abs(y[$0] - reference[$0]) }.max() ?? 0
                    #expect(worst <= 1e-5 * max(1, reference.array.map(abs).max() ?? 1), "\(c): max error \(worst)")
                }
            }
        }
        // NCHW input only, unit stride along the row, 3 or 5 columns.
        let window = { (k: Int, s: Int) in Window(kernel: [k, k], stride: [s, s], pads: [0, 0, 0, 0]) }
        #expect(DirectConv.slides(inBlock: 1, kernelWidth: 5, window: window(5, 1)))
        #expect(!DirectConv.slides(inBlock: 8, kernelWidth: 3, window: window(3, 1)))
        #expect(!DirectConv.slides(inBlock: 1, kernelWidth: 3, window: window(3, 2)))
        #expect(!DirectConv.slides(inBlock: 1, kernelWidth: 7, window: window(7, 1)))
    }

    @Test("two threads give bit-identical output to one", arguments: [24, 32])
    func threadsAgree(outChannels: Int) throws {
        var rng = RandomSource(seed: 5)
        let x = Self.random([3, 16, 10, 10], &rng)
        let conv = DirectConv(
            weight: Self.random([outChannels, 16, 3, 3], &rng), bias: nil,
            window: Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1]), inBlock: 8)
        Parallel.configure(threads: 1)
        let one = try conv(plain: x).plain().array
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        let two = try conv(plain: x).plain().array
        #expect(one == two)
    }

    /// One image with more output channels than pixels: the workers split the output channels
    /// (each runs its epilogue and clears its halo). 292 channels make 37 blocks of eight, enough
    /// tiles for two workers, the last block half filled and, in 16 lanes, the last vector too.
    @Test("one image split by output channels gives the bits of one worker, halo and activation included", arguments: [1, 3])
    func channelSplit(kernel: Int) throws {
        var rng = RandomSource(seed: 6)
        let x = BlockedTensor(Self.random([1, 24, 4, 4], &rng), pad: kernel / 2)
        let conv = DirectConv(
            weight: Self.random([292, 24, kernel, kernel], &rng), bias: Self.random([292], &rng),
            window: Window(kernel: [kernel, kernel], stride: [1, 1], pads: Array(repeating: kernel / 2, count: 4)), inBlock: 8)
        let epilogue = Epilogue(.activation(.hardswish))
        Parallel.configure(threads: 1)
        let one = try conv(x, epilogue, outPad: 1)
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        let two = try conv(x, epilogue, outPad: 1)
        #expect(two.data.array.map(\.bitPattern) == one.data.array.map(\.bitPattern))
        // The halo is zero and the activation ran: hardswish(v) ≥ −0.375 everywhere, and < 0 somewhere.
        #expect(BlockedTensor(one.plain(), pad: 1).data.array == one.data.array)
        #expect(one.data.array.allSatisfy { $0 >= -0.3751 } && one.data.array.contains { $0 < 0 })
    }

    @Test("blocked layout round trip, add, max pool and global average pool match the NCHW kernels")
    func blockedOps() throws {
        var rng = RandomSource(seed: 7)
        let a = Self.random([2, 11, 9, 8], &rng)
        let b = Self.random([2, 11, 9, 8], &rng)
        #expect(BlockedTensor(a).plain().array == a.array)
        let sum = try BlockedTensor.add(BlockedTensor(a), BlockedTensor(b), relu: true).plain()
        #expect(sum.array == (0..<a.count).map { max(0, a[$0] + b[$0]) })
        for g in [
            Window(kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0]),
            Window(kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1], ceilMode: true),
        ] {
            #expect(try BlockedTensor(a).maxPool(g).plain().array == Pooling.maxForwardInference(a, g).array)
        }
        let gap = BlockedTensor(a).globalAveragePool()
        let reference = try Pooling.globalAvgForward(a)
        #expect(gap.shape == reference.shape)
        #expect((0..<gap.count).allSatisfy { abs(gap[$0] - reference[$0]) <= 1e-6 })
    }

    /// Every float of `t`'s halo (and only those).
    static func halo(_ t: BlockedTensor) -> [Float] {
        let (rows, cols) = (t.h + 2 * t.pad, t.w + 2 * t.pad)
        var out: [Float] = []
        for u in 0..<(t.n * t.blocks) {
            for i in 0..<rows {
                for j in 0..<cols where i < t.pad || i >= rows - t.pad || j < t.pad || j >= cols - t.pad {
                    for lane in 0..<8 { out.append(t.data[((u * rows + i) * cols + j) * 8 + lane]) }
                }
            }
        }
        return out
    }

    @Test("inputs and outputs with a zero halo: interior tiles, several rows per tile, the halo stays zero")
    func halo() throws {
        var rng = RandomSource(seed: 13)
        // (x, w, stride, pads, input halo): halos that cover the padding (interior tiles only,
        // several rows per tile for 16 outputs), a halo wider than the padding (1×1), and one
        // narrower (border passes on a halo input).
        let cases: [(x: [Int], w: [Int], stride: Int, pads: Int, halo: Int)] = [
            ([2, 16, 28, 28], [16, 16, 3, 3], 1, 1, 1), ([1, 16, 32, 32], [16, 16, 3, 3], 1, 1, 1),
            ([2, 16, 10, 10], [16, 16, 3, 3], 1, 0, 1), ([1, 16, 26, 26], [16, 16, 3, 3], 1, 1, 1),
            ([2, 8, 7, 9], [16, 8, 3, 3], 1, 1, 2), ([2, 16, 14, 14], [32, 16, 3, 3], 2, 1, 1),
            ([2, 16, 14, 14], [32, 16, 1, 1], 2, 0, 1),
            ([2, 32, 7, 7], [64, 32, 3, 3], 1, 1, 1), ([1, 8, 9, 9], [16, 8, 5, 5], 1, 2, 1), ([2, 16, 20, 20], [16, 16, 3, 3], 2, 1, 1),
        ]
        for c in cases {
            let x = Self.random(c.x, &rng)
            let w = Self.random(c.w, &rng)
            let b = Self.random([c.w[0]], &rng)
            let g = Window(kernel: [c.w[2], c.w[3]], stride: [c.stride, c.stride], pads: Array(repeating: c.pads, count: 4))
            let reference = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: 1, allowFast: false)
            let residual = Self.random(reference.shape, &rng)
            let want = (0..<reference.count).map { max(0, reference[$0] + residual[$0]) }
            for lanes in DirectConv.laneChoices(outChannels: c.w[0]) {
                let conv = DirectConv(weight: w, bias: b, window: g, inBlock: 8, lanes: lanes)
                for outPad in [0, 1] {
                    let y = try conv(
                        BlockedTensor(x, pad: c.halo), Epilogue(.relu, residual: BlockedTensor(residual, pad: 1)), outPad: outPad)
                    #expect(y.pad == outPad)
                    #expect(Self.halo(y).allSatisfy { $0 == 0 }, "\(c): the output halo is not zero")
                    let got = y.plain()
                    let worst = (0..<got.count).map { abs(got[$0] - want[$0]) }.max() ?? 0
                    #expect(worst <= 1e-5 * max(1, want.map(abs).max() ?? 1), "\(c) lanes \(lanes) outPad \(outPad): max error \(worst)")
                }
            }
        }
        #expect(DirectConv.rowTile(width: 28, height: 28)! == (2, 14) as (Int, Int))
        #expect(DirectConv.rowTile(width: 32, height: 32)! == (3, 8) as (Int, Int))
        #expect(DirectConv.rowTile(width: 10, height: 10)! == (2, 14) as (Int, Int))
        #expect(DirectConv.rowTile(width: 16, height: 16)! == (3, 8) as (Int, Int))
        #expect(DirectConv.rowTile(width: 28, height: 1) == nil)
        #expect(DirectConv.split(28, 8) == [7, 7, 7, 7])
    }

    @Test("blocked tensors with halos: round trip, re-padding, add across halos, pooling")
    func haloOps() throws {
        var rng = RandomSource(seed: 17)
        let a = Self.random([2, 11, 9, 8], &rng)
        let b = Self.random([2, 11, 9, 8], &rng)
        for pad in [0, 1, 2] {
            let x = BlockedTensor(a, pad: pad)
            #expect(x.plain().array == a.array)
            #expect(Self.halo(x).allSatisfy { $0 == 0 })
            for other in [0, 1, 2] {
                let y = x.withPad(other)
                #expect(y.pad == other && y.plain().array == a.array && Self.halo(y).allSatisfy { $0 == 0 })
                let sum = try BlockedTensor.add(x, BlockedTensor(b, pad: other), relu: true)
                #expect(sum.pad == pad && Self.halo(sum).allSatisfy { $0 == 0 })
                #expect(sum.plain().array == (0..<a.count).map { max(0, a[$0] + b[$0]) })
            }
            let g = Window(kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1], ceilMode: true)
            let pooled = try x.maxPool(g, outPad: 1)
            #expect(pooled.plain().array == (try Pooling.maxForwardInference(a, g)).array && Self.halo(pooled).allSatisfy { $0 == 0 })
            let gap = x.globalAveragePool()
            let reference = try Pooling.globalAvgForward(a)
            #expect((0..<gap.count).allSatisfy { abs(gap[$0] - reference[$0]) <= 1e-6 })
        }
    }

    @Test("packed linear tiles fit the vector registers: accumulators, one group's weight vectors and a broadcast")
    func packedLinearRegisters() {
        for (lanes, registers) in [(8, 16), (16, 32)] {
            for vectors in 1...200 {
                let groups = PackedLinear.groups(vectors: vectors, lanes: lanes)
                var widest = 0
                for g in 0..<groups {
                    let (first, count) = PackedLinear.group(g, of: groups, vectors: vectors)
                    #expect(count >= 1 && first + count <= vectors)
                    widest = max(widest, count)
                }
                #expect(widest <= PackedLinear.widest(lanes: lanes))
                for rows in [1, 2, 5, 16, 128] {
                    let tile = PackedLinear.tile(rows: rows, vectors: widest, lanes: lanes)
                    #expect(tile.rows * tile.vectors + tile.vectors + 1 <= registers, "\(lanes) lanes, \(vectors) vectors, \(rows) rows")
                }
            }
        }
    }

    @Test("packed linear layers match Linear.forward, with and without ReLU, and two workers give one worker's bits")
    func packedLinear() throws {
        var rng = RandomSource(seed: 19)
        // 16 × 192 and 16 × 320: 12 and 20 output vectors of 16 lanes, in an even count of groups.
        // 300 rows of 1100 inputs.
        for (n, i, o) in [
            (5, 400, 120), (13, 37, 10), (1, 7, 33), (16, 84, 10), (24, 64, 64), (3, 5, 1), (16, 48, 192), (16, 24, 320), (300, 1100, 21),
        ] {
            let x = Self.random([n, i], &rng)
            let w = Self.random([o, i], &rng)
            let b = Self.random([o], &rng)
            for bias in [b, nil] {
                let reference = try Linear.forward(x: x, weight: w, bias: bias)
                let op = PackedLinear(weight: w, bias: bias)
                for relu in [false, true] {
                    let y = try op(x, Epilogue(relu: relu))
                    #expect(y.shape == [n, o])
                    let worst = (0..<y.count).map { abs(y[$0] - (relu ? max(0, reference[$0]) : reference[$0])) }.max() ?? 0
                    #expect(worst <= 1e-5 * max(1, reference.array.map(abs).max() ?? 1), "\(n)×\(i) → \(o): max error \(worst)")
                    Parallel.configure(threads: 2)
                    defer { Parallel.configure(threads: 1) }
                    #expect(try op(x, Epilogue(relu: relu)).array.map(\.bitPattern) == y.array.map(\.bitPattern), "\(n)×\(i) → \(o)")
                }
                // Every output is the bias plus its products in input order, each a fused
                // multiply-add, in whatever tile and order of tiles: the bits of one loop.
                let y = try op(x, .none)
                var exact = true
                for r in 0..<n {
                    for c in 0..<o {
                        var a = bias?[c] ?? 0
                        for k in 0..<i { a = a.addingProduct(x[r * i + k], w[c * i + k]) }
                        exact = exact && a.bitPattern == y[r * o + c].bitPattern
                    }
                }
                #expect(exact, "\(n)×\(i) → \(o)")
            }
            #expect(throws: TensorError.self) { try PackedLinear(weight: w, bias: b)(Self.random([n, i + 1], &rng)) }
        }
    }

    @Test("packed linear layers store straight into the blocked layout with the bits of the rows path, halo and pad channels zero")
    func packedLinearBlocked() throws {
        var rng = RandomSource(seed: 29)
        let six = Activation.clip(min: 0, max: 6)
        // 52 and 24 outputs: a last vector part full, and channels past O in the last block; 160
        // outputs on 16 pixels (groups of two and three vectors in either build); 256 rows of
        // 1100 inputs.
        for (n, h, w, i, o, pad) in [
            (3, 4, 4, 40, 52, 2), (1, 2, 3, 16, 24, 1), (2, 4, 4, 24, 64, 0), (1, 4, 4, 8, 160, 1), (4, 4, 4, 36, 160, 0),
            (16, 4, 4, 1100, 44, 1), (1, 3, 3, 1100, 20, 0),
        ] {
            let x = Self.random([n * h * w, i], &rng)
            let op = PackedLinear(weight: Self.random([o, i], &rng), bias: Self.random([o], &rng))
            // A residual with another halo than the output's: added in registers before the activation.
            let shortcut = BlockedTensor(Self.random([n, o, h, w], &rng), pad: pad == 0 ? 1 : 0)
            for (function, residual) in [(nil, nil), (.relu, nil), (.activation(six), nil), (nil, shortcut), (.relu, shortcut)]
                as [(Epilogue.Function?, BlockedTensor?)]
            {
                let epilogue = Epilogue(function, residual: residual)
                #expect(PackedLinear.storesBlocked(epilogue))
                // The rows path: the plain product, then the residual and the activation on the way back.
                let rows = BlockedTensor(
                    pixelRows: try op(x, .none), n: n, h: h, w: w, pad: pad, residual: residual, activation: Epilogue(function))
                for threads in [1, 2] {
                    Parallel.configure(threads: threads)
                    defer { Parallel.configure(threads: 1) }
                    // Garbage in the pool's buffers first, so that every float written is checked.
                    _ = Tensor(shape: [rows.data.count], values: [Float](repeating: .nan, count: rows.data.count))
                    let blocked = try op(x, epilogue, n: n, h: h, w: w, pad: pad)
                    #expect([blocked.n, blocked.channels, blocked.h, blocked.w, blocked.pad] == [n, o, h, w, pad])
                    #expect(blocked.data.array.map(\.bitPattern) == rows.data.array.map(\.bitPattern), "\(n)×\(h)×\(w) \(i) → \(o)")
                    #expect(Self.halo(blocked).allSatisfy { $0 == 0 })
                }
            }
            #expect(!PackedLinear.storesBlocked(Epilogue(.activation(.hardswish))))
            #expect(throws: TensorError.self) { try op(x, .none, n: n, h: h + 1, w: w, pad: pad) }
            let wrong = BlockedTensor(Self.random([n, o, h, w + 1], &rng), pad: pad)
            #expect(throws: TensorError.self) { try op(x, Epilogue(nil, residual: wrong), n: n, h: h, w: w, pad: pad) }
        }
    }

    @Test("packed linear tiles cover every row and vector once, each group's tile as full as its registers allow")
    func packedLinearTiles() {
        for lanes in [8, 16] {
            let most = lanes == 16 ? 24 : 12
            for vectors in [1, 2, 5, 10, 20, 40, 60, 80] {
                for rows in [1, 7, 16, 64, 1024] {
                    var covered = [Int](repeating: 0, count: rows * vectors)
                    let groups = PackedLinear.groups(vectors: vectors, lanes: lanes)
                    var tilesOfGroup = [Int](repeating: 0, count: groups)
                    for tile in PackedLinear.tiles(rows: rows, vectors: vectors, lanes: lanes) {
                        let (first, count) = PackedLinear.group(tile.group, of: groups, vectors: vectors)
                        #expect(count == tile.count)
                        // Registers: the accumulators, one weight vector each, one broadcast.
                        #expect(tile.rows * count + count + 1 <= (lanes == 16 ? 32 : 16))
                        #expect(tile.rows * count <= most && tile.rows <= 12)
                        tilesOfGroup[tile.group] += 1
                        for r in tile.row..<(tile.row + tile.rows) { for v in first..<(first + count) { covered[r * vectors + v] += 1 } }
                    }
                    #expect(covered.allSatisfy { $0 == 1 }, "\(lanes) lanes, \(vectors) vectors, \(rows) rows")
                    // As few row tiles as each group's own width allows (a group of two vectors
                    // beside groups of three takes more rows per tile, not the three-vector tile's).
                    for g in 0..<groups {
                        let count = PackedLinear.group(g, of: groups, vectors: vectors).count
                        let most = min(rows, 12, most / count)
                        #expect(tilesOfGroup[g] == (rows + most - 1) / most, "\(lanes) lanes, \(vectors) vectors, \(rows) rows")
                    }
                }
            }
        }
    }

    @Test("one epilogue value on every kernel: the activation after bias and residual, as the separate ops give it")
    func epilogueEverywhere() throws {
        var rng = RandomSource(seed: 23)
        let f = Activation.hardswish
        func reference(_ y: Tensor) -> [Float] {
            let out = Tensor(uninitialized: y.shape)
            f.forward(y.pointer, out.pointer, count: y.count)
            return out.array
        }
        func close(_ a: [Float], _ b: [Float], _ what: String) {
            let scale = max(1, b.map(abs).max() ?? 1)
            #expect(a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(what)")
        }
        // Direct and Winograd convolution with a residual: f(conv(x) + r).
        let x = Self.random([2, 16, 10, 10], &rng)
        let w = Self.random([16, 16, 3, 3], &rng)
        let r = Self.random([2, 16, 10, 10], &rng)
        let g = Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1])
        let sum = try Elementwise.add(try Conv2d.forward(x: x, weight: w, bias: nil, g, groups: 1), r)
        let epilogue = Epilogue(.activation(f), residual: BlockedTensor(r, pad: 2))
        let direct = DirectConv(weight: w, bias: nil, window: g, inBlock: 8)
        close(try direct(BlockedTensor(x, pad: 2), epilogue).plain().array, reference(sum), "direct")
        let winograd = WinogradConv(weight: w, bias: nil)
        close(try winograd(BlockedTensor(x, pad: 2), epilogue, tile: 2).plain().array, reference(sum), "Winograd")
        // The packed linear layer (no residual).
        let a = Self.random([5, 24], &rng)
        let lw = Self.random([10, 24], &rng)
        close(
            try PackedLinear(weight: lw, bias: nil)(a, Epilogue(.activation(f))).array,
            reference(try Linear.forward(x: a, weight: lw, bias: nil)), "linear")
        #expect(Epilogue(.activation(.silu)).preservesZero && !Epilogue(.activation(.hardsigmoid(alpha: 0.2, beta: 0.5))).preservesZero)
    }

    @Test("ReLU6 in the direct kernel's registers matches clip(conv + bias (+ residual), 0, 6) on every tile family")
    func relu6InRegisters() throws {
        var rng = RandomSource(seed: 29)
        let six = Activation.clip(min: 0, max: 6)
        for (c, o, k, h, w, pad, lanes, pixels, sliding) in [
            (24, 32, 1, 9, 13, 0, 16, false, false), (16, 16, 3, 10, 10, 1, 16, false, false), (16, 16, 3, 12, 20, 1, 16, true, false),
            (16, 16, 3, 7, 30, 0, 16, false, true), (8, 24, 1, 6, 6, 0, 8, false, false),
        ] {
            let x = Self.random([2, c, h, w], &rng).scaled(by: 8)
            let wt = Self.random([o, c, k, k], &rng)
            let bias = Self.random([o], &rng)
            let g = Window(kernel: [k, k], stride: [1, 1], pads: [pad, pad, pad, pad])
            let conv = try Conv2d.forward(x: x, weight: wt, bias: bias, g, groups: 1)
            let r = Self.random(conv.shape, &rng).scaled(by: 4)
            for residual in [nil, r] {
                let pre = residual.map { try! Elementwise.add(conv, $0) } ?? conv
                let want = pre.array.map { min(max($0, 0), 6) }
                guard DirectConv.laneChoices(outChannels: o).contains(lanes) else { continue }
                let kernel = DirectConv(
                    weight: wt, bias: bias, window: g, inBlock: 8, lanes: lanes, allowPixelPath: pixels, allowSliding: sliding)
                let got = try kernel(
                    BlockedTensor(x, pad: pad), Epilogue(.activation(six), residual: residual.map { BlockedTensor($0, pad: 1) })
                )
                .plain().array
                let scale = max(1, want.map(abs).max() ?? 1)
                #expect(
                    got.count == want.count && zip(got, want).allSatisfy { abs($0 - $1) <= 1e-5 * scale },
                    "c \(c) o \(o) k \(k) \(h)×\(w) lanes \(lanes) pixels \(pixels) sliding \(sliding) residual \(residual != nil)")
                #expect(got.allSatisfy { $0 >= 0 && $0 <= 6 } && got.contains(6) && got.contains(0), "clipped at both ends")
            }
        }
    }

    @Test("tap steps reach every tap's input and weights as the counters do: any kernel, any rows and columns of it")
    func tapSteps() {
        let base = UnsafePointer<Float>(bitPattern: 1 << 20)!
        var visited = 0
        for (kh, kw) in [(1, 1), (3, 3), (5, 5), (3, 1), (1, 7)] {
            for rows in [0..<kh, 0..<max(0, kh - 1), min(1, kh)..<kh, 0..<0] {
                for columns in [0..<kw, min(1, kw)..<kw, 0..<max(1, kw / 2), 0..<0] {
                    let (planeStride, tapH, tapW, tap, cb) = (1000, 90, 8, 64, 3)
                    let steps = TapSteps(
                        rows: rows, columns: columns, planeStride: planeStride, tapH: tapH, tapW: tapW, kh: kh, kw: kw, tap: tap)
                    var (ki, kj) = (rows.lowerBound, columns.lowerBound)
                    var (px, wq) = (base + steps.input, base + steps.weight)
                    for c in 0..<cb {
                        for i in rows {
                            for j in columns {
                                #expect((ki, kj) == (i, j))
                                let at = "kernel \(kh)×\(kw) rows \(rows) columns \(columns), tap \(c), \(i), \(j)"
                                #expect(px - base == c * planeStride + i * tapH + j * tapW, "\(at)")
                                #expect(wq - base == ((c * kh + i) * kw + j) * tap, "\(at)")
                                steps.advance(&ki, &kj, &px, &wq)
                                visited += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(visited > 300)
    }

    @Test("straight-line tiles give the generic tile's bits: every width and vector count, borders, half tails, residual, ReLU and ReLU6")
    func straightLineTiles() throws {
        var rng = RandomSource(seed: 21)
        let six = Activation.clip(min: 0, max: 6)
        var compared = 0
        // Widths 1–16 select every tile width of 1, 2, 3 and 4 vectors (16 lanes: 14 × 1, 12 × 2
        // and 8 × 3; 8 lanes: 8 × 1, 6 × 2, 4 × 3, 3 × 4); 24 and 40 outputs end in a half vector;
        // 3 × 3 with padding runs the border passes, which start from the output, not the bias.
        for (k, pad) in [(1, 0), (3, 1)] {
            for o in [8, 16, 24, 32, 40, 48, 64] {
                for width in 1...16 {
                    let x = Self.random([1, 16, 3, width], &rng).scaled(by: 8)
                    let w = Self.random([o, 16, k, k], &rng)
                    let b = Self.random([o], &rng)
                    let r = BlockedTensor(Self.random([1, o, 3, width], &rng).scaled(by: 4), pad: 1)
                    let g = Window(kernel: [k, k], stride: [1, 1], pads: [pad, pad, pad, pad])
                    for lanes in DirectConv.laneChoices(outChannels: o) {
                        var generic = DirectConv(weight: w, bias: b, window: g, inBlock: 8, lanes: lanes, allowPixelPath: false)
                        let straight = generic
                        generic.straightLineTiles = false
                        for epilogue in [Epilogue.none, Epilogue(.relu, residual: r), Epilogue(.activation(six), residual: r)] {
                            let want = try generic(BlockedTensor(x, pad: pad), epilogue, outPad: 1)
                            let got = try straight(BlockedTensor(x, pad: pad), epilogue, outPad: 1)
                            let same = got.data.array.map(\.bitPattern) == want.data.array.map(\.bitPattern)
                            #expect(same, "\(k)×\(k), \(o) outputs, width \(width), \(lanes) lanes")
                            compared += 1
                        }
                    }
                }
            }
        }
        #expect(compared == 2 * 16 * 3 * DirectConv.laneChoices(outChannels: 8).count + 2 * 16 * 3 * 6 * (VectorUnits.wide ? 2 : 1))
    }

    @Test("pixel rows and back: every channel of every pixel, a partial last block, residual and activation row by row")
    func pixelRows() throws {
        var rng = RandomSource(seed: 5)
        let x = Self.random([2, 20, 3, 5], &rng)
        let rows = BlockedTensor(x, pad: 1).pixelRows()
        #expect(rows.shape == [30, 20])
        for img in 0..<2 {
            for c in 0..<20 {
                for p in 0..<15 { #expect(rows[(img * 15 + p) * 20 + c] == x[(img * 20 + c) * 15 + p]) }
            }
        }
        let r = Self.random([2, 20, 3, 5], &rng)
        let six = Activation.clip(min: 0, max: 6)
        let back = BlockedTensor(
            pixelRows: rows.scaled(by: 20), n: 2, h: 3, w: 5, pad: 1, residual: BlockedTensor(r), activation: Epilogue(.activation(six)))
        #expect(back.pad == 1 && DirectConvTests.halo(back).allSatisfy { $0 == 0 }, "the halo stays zero")
        let plane = back.data.count / (2 * 3)
        var spare: [Float] = []
        for img in 0..<2 {
            for p in 0..<(plane / 8) { spare += (4..<8).map { back.data[(img * 3 + 2) * plane + p * 8 + $0] } }
        }
        #expect(spare.allSatisfy { $0 == 0 }, "channels 20–23 of the last block stay zero")
        let want = (0..<x.count).map { min(max(x[$0] * 20 + r[$0], 0), 6) }
        #expect(back.plain().array == want)
        #expect(want.contains(0) && want.contains(6))
    }
}
