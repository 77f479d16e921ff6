import Testing

@testable import KDTensor

/// The blocked training path (convolutions, batch norm, ReLU, additions and pooling on NCHW8c with
/// a halo) against the NCHW one, value by value and gradient by gradient.
@Suite("Blocked training path")
struct BlockedTapeTests {
    struct Net: CustomStringConvertible, Sendable {
        /// Channels of the two stages, and the input's.
        let input: Int
        let first: Int
        let second: Int
        var description: String { "\(input) → \(first) → \(second) channels" }
    }

    static func random(_ shape: [Int], _ rng: inout RandomSource, scale: Float = 0.5) -> Tensor {
        Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in (rng.nextFloat() - 0.5) * 2 * scale })
    }

    /// A residual network in miniature: stem, a basic block, a stride-2 block with a 1 × 1
    /// projection, max pooling, a 5 × 5 convolution, global pooling and a linear head. Returns the
    /// loss-like output, the parameters and the tape.
    static func run(_ net: Net, blocked: Bool, seed: UInt64) throws -> (output: Tensor, grads: [Tensor], values: [Tensor]) {
        var rng = RandomSource(seed: seed)
        let tape = Tape(blocked: blocked)
        let x = tape.leaf(random([3, net.input, 12, 12], &rng, scale: 1))
        var params: [Var] = []
        func param(_ shape: [Int], _ scale: Float = 0.3) -> Var {
            let v = tape.leaf(random(shape, &rng, scale: scale), requiresGrad: true)
            params.append(v)
            return v
        }
        func conv(_ v: Var, _ o: Int, _ c: Int, k: Int, s: Int, p: Int, bias: Bool = false) throws -> Var {
            try tape.conv2d(
                v, param([o, c, k, k]), bias ? param([o]) : nil, Window(kernel: [k, k], stride: [s, s], pads: [p, p, p, p]), groups: 1)
        }
        func bn(_ v: Var, _ c: Int) throws -> Var {
            let gamma = tape.leaf(Tensor(shape: [c], values: (0..<c).map { _ in 1 + rng.nextFloat() * 0.2 }), requiresGrad: true)
            let beta = param([c], 0.1)
            params.append(gamma)
            return try tape.batchnorm(
                v, scale: gamma, bias: beta, runningMean: Tensor(zeros: [c]), runningVar: Tensor(shape: [c], repeating: 1), epsilon: 1e-5,
                momentum: 0.1, training: true)
        }
        let (a, b) = (net.first, net.second)
        let stem = tape.relu(try bn(try conv(x, a, net.input, k: 3, s: 1, p: 1, bias: true), a))
        let block = tape.relu(
            try tape.add(try bn(try conv(tape.relu(try bn(try conv(stem, a, a, k: 3, s: 1, p: 1), a)), a, a, k: 3, s: 1, p: 1), a), stem))
        let down = try bn(try conv(tape.relu(try bn(try conv(block, b, a, k: 3, s: 2, p: 1), b)), b, b, k: 3, s: 1, p: 1), b)
        let projection = try bn(try conv(block, b, a, k: 1, s: 2, p: 0), b)
        let stage = tape.relu(try tape.add(down, projection))
        let pooled = try tape.maxpool(stage, Window(kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0]))
        let wide = tape.relu(try conv(pooled, b, b, k: 5, s: 1, p: 2, bias: true))
        let gap = try tape.reshape(try tape.globalAvgPool(wide), [3, b])
        let out = try tape.linear(gap, param([5, b]), param([5]))
        let seed = random([3, 5], &rng, scale: 1)
        try tape.backward([(out, seed)])
        return (tape.value(out), params.map { tape.grad($0)! }, [stem, block, stage, pooled].map { tape.value($0) })
    }

    /// The largest difference over the largest element of `b` (at least `floor`).
    static func close(_ a: Tensor, _ b: Tensor, _ floor: Float = 1e-3) -> Float {
        let scale = max(floor, b.array.map(abs).max() ?? 0)
        return (0..<a.count).map { abs(a[$0] - b[$0]) }.max().map { $0 / scale } ?? 0
    }

    // 16 and 32 channels take the 16-lane kernels (AVX-512 builds); 8 and 24 the 8-lane ones.
    @Test(
        "values and every parameter gradient match the NCHW path",
        arguments: [Net(input: 1, first: 16, second: 32), Net(input: 3, first: 8, second: 24), Net(input: 6, first: 16, second: 16)])
    func matchesPlain(net: Net) throws {
        let blocked = try Self.run(net, blocked: true, seed: 4)
        let plain = try Self.run(net, blocked: false, seed: 4)
        #expect(Self.close(blocked.output, plain.output) <= 1e-4, "\(net): outputs differ")
        for (i, (a, b)) in zip(blocked.values, plain.values).enumerated() {
            #expect(a.shape == b.shape && Self.close(a, b) <= 1e-4, "\(net): activation \(i) differs")
        }
        #expect(blocked.grads.count == plain.grads.count)
        // A bias before a batch norm has a gradient of zero in exact arithmetic (the norm removes
        // the mean): its rounding noise is measured against the other gradients.
        let largest = plain.grads.map { $0.array.map(abs).max() ?? 0 }.max() ?? 0
        for (i, (a, b)) in zip(blocked.grads, plain.grads).enumerated() {
            #expect(a.shape == b.shape, "\(net): gradient \(i) has shape \(a.shape), not \(b.shape)")
            let error = Self.close(a, b, largest / 100)
            #expect(error <= 1e-3, "\(net): gradient \(i) \(a.shape) differs by \(error) of its largest element")
        }
    }

    @Test("two threads give the same bits as each other run after run")
    func threads() throws {
        let net = Net(input: 3, first: 16, second: 32)
        Parallel.configure(threads: 2)
        defer { Parallel.configure(threads: 1) }
        let a = try Self.run(net, blocked: true, seed: 9)
        let b = try Self.run(net, blocked: true, seed: 9)
        #expect(a.output.array == b.output.array)
        #expect(zip(a.grads, b.grads).allSatisfy { $0.array == $1.array })
    }
}
