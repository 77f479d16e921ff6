import Testing

@testable import KDTensor

/// The depthwise kernels against the im2col reference, across the cases their fast paths split on:
/// channels that do not fill a block of 8, 3×3 (registers) and 5×5 taps, strides 1 and 2, padding up
/// to the halo, and epilogues with f(0) = 0 and f(0) ≠ 0 (whose padding lanes must be cleared).
@Suite("Depthwise convolution kernels")
struct DepthwiseTests {
    static func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ g: Window, _ f: Activation?) throws -> Tensor {
        let y = try Conv2d.forward(x: x, weight: w, bias: b, g, groups: x.shape[1], allowFast: false)
        if let f { f.forward(y.pointer, y.pointer, count: y.count) }
        return y
    }

    static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = RandomSource(seed: seed)
        let t = Tensor(uninitialized: shape)
        for i in 0..<t.count { t[i] = rng.nextFloat() * 2 - 1 }
        return t
    }

    @Test(
        "blocked and NCHW kernels match im2col",
        arguments: [
            (13, 9, 3, 1, 1), (13, 9, 3, 2, 1), (16, 12, 5, 1, 2), (16, 11, 5, 2, 2), (8, 7, 3, 1, 1), (24, 14, 7, 1, 3),
        ])
    func matches(c: Int, size: Int, k: Int, stride: Int, pad: Int) throws {
        let x = Self.random([2, c, size, size + 1], seed: 1)
        let w = Self.random([c, 1, k, k], seed: 2)
        let b = Self.random([c], seed: 3)
        let g = Window(kernel: [k, k], stride: [stride, stride], pads: [pad, pad, pad, pad])
        for f in [nil, Activation.hardswish, .hardsigmoid(alpha: 0.2, beta: 0.5), .clip(min: 0, max: 6)] as [Activation?] {
            let want = try Self.reference(x, w, b, g, f)
            let plain = try Depthwise.forward(x: x, weight: w, bias: b, g, Epilogue(f.map { .activation($0) }))
            let blocked = try Depthwise.blocked(
                BlockedTensor(x, pad: 3), weight: w, bias: b, g, Epilogue(f.map { .activation($0) }), outPad: 1)
            let scale = max(1, want.array.map(abs).max() ?? 1)
            #expect(plain.shape == want.shape && blocked.shape == want.shape)
            #expect(zip(plain.array, want.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "NCHW, \(String(describing: f))")
            #expect(zip(blocked.plain().array, want.array).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "blocked, \(String(describing: f))")
            // The halo and the lanes past the channels stay zero for the next layer.
            let padded = BlockedTensor(uninitialized: blocked.n, channels: blocked.channels, h: blocked.h, w: blocked.w, pad: 1)
            let lanes = blocked.blocks * 8 - c
            if lanes > 0 || blocked.pad > 0 {
                #expect(blocked.data.count == padded.data.count)
                let total = blocked.data.array.reduce(0) { $0 + abs($1) }
                let interior = blocked.plain().array.reduce(0) { $0 + abs($1) }
                #expect(abs(total - interior) <= 1e-3 * max(1, interior), "only the interior of the real channels is non-zero")
            }
        }
    }

    /// One output of the blocked kernel in its documented order: the bias, then the taps row by row,
    /// left to right (zeros where the tap is in the padding), a 3 × 3 filter's second and third rows
    /// each summed before they are added, except in a row's lone last pixel (an odd width).
    static func pinnedOrder(
        _ x: Tensor, _ w: Tensor, _ b: Tensor, _ g: Window, img: Int, ch: Int, oi: Int, oj: Int, wo: Int
    ) -> Float {
        let (c, h, wd) = (x.shape[1], x.shape[2], x.shape[3])
        let (kh, kw) = g.kernel
        func tap(_ ki: Int, _ kj: Int) -> Float {
            let (i, j) = (oi * g.stride.h - g.pads[0] + ki * g.dilation.h, oj * g.stride.w - g.pads[1] + kj * g.dilation.w)
            let v = i >= 0 && i < h && j >= 0 && j < wd ? x[((img * c + ch) * h + i) * wd + j] : 0
            return w[(ch * kh + ki) * kw + kj] * v
        }
        var a = b[ch]
        let grouped = kh == 3 && kw == 3 && !(wo % 2 == 1 && oj == wo - 1)
        for ki in 0..<kh {
            if grouped && ki > 0 {
                var t = tap(ki, 0)
                for kj in 1..<kw { t += tap(ki, kj) }
                a += t
            } else {
                for kj in 0..<kw { a += tap(ki, kj) }
            }
        }
        return a
    }

    @Test(
        "the blocked kernel sums in its documented order, bit for bit, in every tile of pixel pairs",
        arguments: [
            (3, 3, 1, 1, 15), (3, 3, 2, 1, 15), (3, 3, 1, 2, 7), (5, 5, 1, 1, 15), (5, 5, 2, 1, 14), (7, 7, 1, 1, 9),
            (5, 3, 1, 1, 13), (3, 5, 2, 1, 1), (3, 3, 1, 1, 2),
        ])
    func pinnedOrder(kh: Int, kw: Int, stride: Int, dilation: Int, width: Int) throws {
        let c = 13
        let (ph, pw) = (kh / 2 * dilation, kw / 2 * dilation)
        let x = Self.random([2, c, 6, width], seed: 11)
        let w = Self.random([c, 1, kh, kw], seed: 12)
        let b = Self.random([c], seed: 13)
        let g = Window(kernel: [kh, kw], stride: [stride, stride], pads: [ph, pw, ph, pw], dilation: [dilation, dilation])
        // With the halo the padding needs, and with none (the kernel pads each plane in a scratch plane).
        for (f, halo) in [(nil, max(ph, pw)), (Activation.clip(min: 0, max: 6), max(ph, pw)), (nil, 0), (.clip(min: 0, max: 6), 0)]
            as [(Activation?, Int)]
        {
            let y = try Depthwise.blocked(
                BlockedTensor(x, pad: halo), weight: w, bias: b, g, Epilogue(f.map { .activation($0) }), outPad: 1
            )
            .plain()
            let (ho, wo) = (y.shape[2], y.shape[3])
            var mismatches = 0
            for img in 0..<2 {
                for ch in 0..<c {
                    for oi in 0..<ho {
                        for oj in 0..<wo {
                            var want = Self.pinnedOrder(x, w, b, g, img: img, ch: ch, oi: oi, oj: oj, wo: wo)
                            if f != nil { want = min(max(want, 0), 6) }
                            if y[((img * c + ch) * ho + oi) * wo + oj].bitPattern != want.bitPattern { mismatches += 1 }
                        }
                    }
                }
            }
            #expect(
                mismatches == 0,
                "\(kh)×\(kw) stride \(stride) dilation \(dilation) width \(width), halo \(halo), \(String(describing: f))")
        }
    }

    @Test(
        "on small maps the blocked kernel pads each plane itself: the same bits as from a halo",
        arguments: [(13, 4, 4, 5, 1), (16, 8, 8, 5, 1), (24, 4, 5, 3, 1), (13, 8, 8, 5, 2), (16, 3, 3, 3, 1), (8, 2, 2, 3, 2)])
    func padsItself(c: Int, h: Int, w: Int, k: Int, stride: Int) throws {
        let pad = k / 2
        let x = Self.random([3, c, h, w], seed: 21)
        let weight = Self.random([c, 1, k, k], seed: 22)
        let bias = Self.random([c], seed: 23)
        let g = Window(kernel: [k, k], stride: [stride, stride], pads: [pad, pad, pad, pad])
        let f = Epilogue(.activation(.clip(min: 0, max: 6)))
        let want = try Depthwise.blocked(BlockedTensor(x, pad: pad), weight: weight, bias: bias, g, f, outPad: 2)
        for halo in 0..<pad {
            let input = BlockedTensor(x, pad: halo)
            #expect(Depthwise.blockedForwardApplies(input, weight: weight.shape, g))
            #expect(!Depthwise.blockedApplies(input, weight: weight.shape, g), "the training kernels still need the halo")
            let y = try Depthwise.blocked(input, weight: weight, bias: bias, g, f, outPad: 2)
            #expect(y.data.array.map(\.bitPattern) == want.data.array.map(\.bitPattern), "halo \(halo)")
        }
    }

    @Test("the plan's rule for a kernel padding its planes itself: where a halo would at least double the plane")
    func padsItselfRule() {
        #expect(Depthwise.padsItself(h: 4, w: 4, pad: 2) && Depthwise.padsItself(h: 8, w: 8, pad: 2))
        #expect(Depthwise.padsItself(h: 4, w: 4, pad: 1) && Depthwise.padsItself(h: 2, w: 2, pad: 1))
        #expect(!Depthwise.padsItself(h: 8, w: 8, pad: 1) && !Depthwise.padsItself(h: 16, w: 16, pad: 2))
        #expect(!Depthwise.padsItself(h: 4, w: 4, pad: 0) && !Depthwise.padsItself(h: 40, w: 40, pad: 3))
        // A plane too large for the scratch plane is not padded by the kernel.
        let huge = BlockedTensor(Tensor(zeros: [1, 8, 40, 40]), pad: 0)
        #expect(
            !Depthwise.blockedForwardApplies(huge, weight: [8, 1, 3, 3], Window(kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1])))
    }

    @Test(
        "the blocked backward gives im2col's gradients for x, the filters and the bias",
        arguments: [(13, 9, 3, 1, 1), (16, 12, 5, 2, 2), (24, 10, 3, 2, 1), (8, 7, 5, 1, 2)])
    func backward(c: Int, size: Int, k: Int, stride: Int, pad: Int) throws {
        let x = Self.random([2, c, size, size + 1], seed: 4)
        let w = Self.random([c, 1, k, k], seed: 5)
        let g = Window(kernel: [k, k], stride: [stride, stride], pads: [pad, pad, pad, pad])
        let y = try Self.reference(x, w, Self.random([c], seed: 6), g, nil)
        let dy = Self.random(y.shape, seed: 7)
        let want = try Conv2d.backward(dy: dy, x: x, weight: w, hasBias: true, g, groups: c, needInput: true, allowFast: false)
        let got = Depthwise.blockedBackward(
            dy: BlockedTensor(dy, pad: 1), x: BlockedTensor(x, pad: pad), weight: w, g, hasBias: true, needInput: true)
        func close(_ a: [Float], _ b: [Float], _ what: String) {
            let scale = max(1, b.map(abs).max() ?? 1)
            #expect(a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, "\(what)")
        }
        let dx = try #require(got.dx)
        close(dx.plain().array, try #require(want.dx).array, "dx")
        close(got.dw.array, want.dw.array, "dw")
        close(try #require(got.db).array, try #require(want.db).array, "db")
        // The halo of dx (padding positions) is cleared for the gradient's next consumer.
        let total = dx.data.array.reduce(0) { $0 + abs($1) }
        let interior = dx.plain().array.reduce(0) { $0 + abs($1) }
        #expect(abs(total - interior) <= 1e-3 * max(1, interior))
    }

    @Test("training on the tape runs depthwise layers and their activations blocked, with the NCHW tape's values and gradients")
    func tapeBlocked() throws {
        let x = Self.random([2, 12, 9, 9], seed: 8)
        let w1 = Self.random([12, 12, 1, 1], seed: 9)
        let dw = Self.random([12, 1, 5, 5], seed: 10)
        func run(blocked: Bool) throws -> ([Float], [Float], [Float]) {
            let tape = Tape(blocked: blocked)
            let (xv, a, b) = (tape.leaf(x, requiresGrad: true), tape.leaf(w1, requiresGrad: true), tape.leaf(dw, requiresGrad: true))
            let p = try tape.conv2d(xv, a, nil, Window(kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0]), groups: 1)
            let d = try tape.conv2d(p, b, nil, Window(kernel: [5, 5], stride: [2, 2], pads: [2, 2, 2, 2]), groups: 12)
            let y = tape.activation(tape.activation(d, .hardswish), .clip(min: 0, max: 6))
            if blocked { #expect(tape.isBlocked(y)) }
            let out = tape.value(y)
            try tape.backward([(y, Tensor(shape: out.shape, values: (0..<out.count).map { Float($0 % 5) - 2 }))])
            return (out.array, tape.grad(xv)!.array, tape.grad(b)!.array)
        }
        let (fast, slow) = (try run(blocked: true), try run(blocked: false))
        for (a, b, what) in [(fast.0, slow.0, "y"), (fast.1, slow.1, "dx"), (fast.2, slow.2, "dw")] {
            let scale = max(1, b.map(abs).max() ?? 1)
            #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 * scale }, "\(what)")
        }
    }
}
