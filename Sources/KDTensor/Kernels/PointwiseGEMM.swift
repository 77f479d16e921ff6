/// Training's 1×1 convolutions on small maps as GEMMs over pixel rows (`BlockedTensor.pixelRows()`:
/// X `[P, C]`, Y and dY `[P, O]`, P = N·H·W): Y = X·Wᵀ, dW = dYᵀ·X, dX = dY·W.
///
/// The direct kernels run their tiles image by image, over H·W pixels between loads and stores of
/// their sums; on a 4 × 4 map that is 16 pixels, while a GEMM's inner products run over all N·H·W
/// pixels. Each GEMM splits its rows between the workers (`BLAS.gemm`), so results depend on the
/// thread count only.
public enum PointwiseGEMM {
    /// Largest map (H·W) whose 1×1 convolutions take the GEMMs: 4 × 4. On 8 × 8 maps the direct
    /// kernels were as fast or faster (shufflenetv2's 116 → 116 layers, training's backward pass).
    static let maxPixels = 16

    /// Whether the GEMMs handle this convolution: dense, 1×1, stride 1, no padding, on a map of at
    /// most `maxPixels` pixels.
    public static func applies(_ g: Window, groups: Int, h: Int, w: Int) -> Bool {
        groups == 1 && g.kernel == (1, 1) && g.stride == (1, 1) && g.pads.allSatisfy { $0 == 0 } && g.dilation == (1, 1)
            && h * w <= maxPixels
    }

    /// y = conv(x, W) + b, blocked with a halo of `outPad`.
    public static func forward(_ x: BlockedTensor, weight: Tensor, bias: Tensor?, outPad: Int) -> BlockedTensor {
        let (o, c, pixels) = (weight.shape[0], x.channels, x.n * x.h * x.w)
        let rows = x.pixelRows()
        let y = Tensor(uninitialized: [pixels, o])
        if let bias { for p in 0..<pixels { (y.pointer + p * o).update(from: bias.pointer, count: o) } }
        BLAS.gemm(
            transB: true, m: pixels, n: o, k: c, a: rows.pointer, lda: c, b: weight.pointer, ldb: c, beta: bias == nil ? 0 : 1,
            c: y.pointer, ldc: o)
        return BlockedTensor(pixelRows: y, n: x.n, h: x.h, w: x.w, pad: outPad, residual: nil, activation: .none)
    }

    /// dX (when `needInput`, blocked with a halo of `pad`) and dW `[O, C, 1, 1]`.
    public static func backward(x: BlockedTensor, dy: BlockedTensor, weight: Tensor, needInput: Bool, pad: Int) -> (
        dx: BlockedTensor?, dw: Tensor
    ) {
        let (o, c, pixels) = (dy.channels, x.channels, x.n * x.h * x.w)
        let rowsY = dy.pixelRows()
        let dx: BlockedTensor? =
            needInput
            ? Profiler.measure("backward conv2d (input)") {
                let rowsX = Tensor(uninitialized: [pixels, c])
                BLAS.gemm(m: pixels, n: c, k: o, a: rowsY.pointer, lda: o, b: weight.pointer, ldb: c, c: rowsX.pointer, ldc: c)
                return BlockedTensor(pixelRows: rowsX, n: x.n, h: x.h, w: x.w, pad: pad, residual: nil, activation: .none)
            } : nil
        let dw = Profiler.measure("backward conv2d (weight)") {
            let rowsIn = x.pixelRows()
            let dw = Tensor(uninitialized: [o, c, 1, 1])
            BLAS.gemm(
                transA: true, m: o, n: c, k: pixels, a: rowsY.pointer, lda: o, b: rowsIn.pointer, ldb: c, c: dw.pointer, ldc: c)
            return dw
        }
        return (dx, dw)
    }
}
