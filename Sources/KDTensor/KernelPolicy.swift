/// The kernel choices a debugging flag may change, in one place: every site that plans or runs a
/// convolution reads them here. The product sets them only from kdtool's hidden `--debug-*` flags
/// (no environment variables); `changes` lists what differs from the defaults, and kdtool records
/// it in provenance and in the teacher-cache key, since Winograd's choice changes results in the
/// last bits.
public enum KernelPolicy {
    /// Winograd for 3×3 stride-1 convolutions at inference: F(4×4, 3×3) where it applies and
    /// F(2×2, 3×3) elsewhere (`on`), F(2×2, 3×3) only (`small`), or direct convolution (`off`).
    public enum Winograd: String, CaseIterable, Sendable {
        case on, small, off
    }

    nonisolated(unsafe) public static var winograd = Winograd.on
    /// Whether direct convolutions keep a sliding window of input columns in registers.
    nonisolated(unsafe) public static var slidingColumns = true
    /// Winograd tiles per parallel work unit, at most (a measurement knob; does not change results).
    nonisolated(unsafe) public static var winogradTiles = 16
    /// Whether an inference plan runs a batch of one image's inverted residual blocks in two
    /// halves of their expanded channels (InferencePlan+Halves.swift in KDNN); false keeps every
    /// block's layers whole, as a larger batch runs them. Changes results in the last bits.
    nonisolated(unsafe) public static var halvedBlocks = true

    /// Whether Winograd beats the direct kernel on a layer: not on small maps with many channels
    /// (measured, one image, 2 threads: 512 channels at 7 × 7, resnet18's last stage, 2.63 ms by
    /// F(4×4, 3×3) against 0.63 ms direct; 256 channels at 14 × 14, 0.41 against 0.50 ms).
    public static func winogradPays(channels: Int, h: Int, w: Int) -> Bool { channels < 128 || h * w >= 100 }

    /// The settings that differ from the defaults, as "name=value" (empty when all are default).
    public static var changes: [String] {
        var out: [String] = []
        if winograd != .on { out.append("winograd=\(winograd.rawValue)") }
        if !slidingColumns { out.append("sliding=off") }
        if winogradTiles != 16 { out.append("winograd_tiles=\(winogradTiles)") }
        if !halvedBlocks { out.append("halved_blocks=off") }
        return out
    }
}
