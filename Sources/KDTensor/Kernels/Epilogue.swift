/// What a kernel applies to each value it produces while the value is still in registers or
/// cache: the bias (packed with the weights when the kernel is made, a folded batch norm's shift
/// included), then a residual operand (a ResNet block's shortcut), then the activation. One value
/// for every kernel that fuses an epilogue — direct and Winograd convolution, convolution + pool,
/// depthwise convolution, the packed linear layer — so a new activation reaches all of them
/// through `Activation` alone.
///
///     let y = try conv(x, Epilogue(.relu, residual: shortcut), outPad: 1)
public struct Epilogue: @unchecked Sendable {
    /// The activation last: op set 1's ReLU (its own fast path in every kernel) or one of
    /// `Activation`'s.
    public enum Function: Hashable, Sendable {
        case relu
        case activation(Activation)
    }

    public var function: Function?
    /// Added before the activation; channel-blocked, the output's shape (blocked kernels only).
    public var residual: BlockedTensor?

    public init(_ function: Function? = nil, residual: BlockedTensor? = nil) {
        self.function = function
        self.residual = residual
    }

    public static var none: Epilogue { Epilogue() }
    public static var relu: Epilogue { Epilogue(.relu) }

    /// ReLU or nothing, for the kernels whose fused form is generated per case.
    public init(relu: Bool, residual: BlockedTensor? = nil) { self.init(relu ? .relu : nil, residual: residual) }

    public var isReLU: Bool { function == .relu }
    /// The activation when it is not ReLU.
    public var activation: Activation? {
        if case .activation(let f) = function { return f }
        return nil
    }
    /// Whether f(0) = 0, so the epilogue may also run over a blocked tensor's zero halo and
    /// padding lanes.
    public var preservesZero: Bool { activation?.preservesZero ?? true }

    /// Runs `visitor` with the activation as a concrete 16-lane function (identity for none).
    @inline(__always)
    public func accept<Visitor: ActivationVisitor>(_ visitor: Visitor) -> Visitor.Result {
        Activation.accept(activation, relu: isReLU, visitor)
    }

    /// The activation over `count` floats at `p` in place, on the calling thread.
    public func apply(to p: UnsafeMutablePointer<Float>, count: Int) {
        switch function {
        case .relu:
            for i in 0..<count { p[i] = max(p[i], 0) }
        case .activation(let f): f.forward(p, p, count: count)
        case nil: break
        }
    }

    /// The activation over a whole tensor in place (for kernels that finish their output first).
    public func apply(to t: Tensor) {
        switch function {
        case .relu: Elementwise.reluInPlace(t)
        case .activation(let f):
            Parallel.chunks(t.count, parts: t.count > 1 << 16 ? Parallel.threads : 1) { _, r in
                f.forward(t.pointer + r.lowerBound, t.pointer + r.lowerBound, count: r.count)
            }
        case nil: break
        }
    }
}
