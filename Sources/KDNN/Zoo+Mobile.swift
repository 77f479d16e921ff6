import KDBundle
import KDTensor

/// The students people deploy: MobileNetV2, MobileNetV3 (small, large), ShuffleNetV2,
/// EfficientNet-B0 and -Lite0, and ResNet-18 — built as torchvision builds them, with torchvision's
/// module paths as node names, so every parameter is named as in a torchvision state dict
/// (`features.3.conv.1.0.weight`) and `kdtool import --arch` loads one without `--map`.
///
/// Each picks its stem from the input (`Stem`): ImageNet's (a stride-2 first layer, and ResNet-18's
/// 7×7 convolution and max pool) above 64 pixels a side, a CIFAR stem at or below (stride 1 there,
/// and the first stride-2 stage of the mobile nets at stride 1, so 32×32 inputs end at 4×4 as
/// 224×224 ones end at 7×7; ResNet-18 takes a 3×3 first convolution and no max pool).
extension Architecture {
    public enum Stem: String, CaseIterable, Sendable { case cifar, imagenet }

    /// The stem for an input of `input` = [C, H, W]: `stem` when set, else CIFAR-style at ≤ 64 pixels a side.
    public func resolvedStem(input: [Int]) -> Stem { stem ?? (max(input[1], input[2]) <= 64 ? .cifar : .imagenet) }

    /// torchvision's `_make_divisible`: the nearest multiple of `divisor` (at least `divisor`),
    /// never more than 10 % below v.
    public static func makeDivisible(_ v: Double, _ divisor: Int = 8) -> Int {
        var rounded = max(divisor, Int(v + Double(divisor) / 2) / divisor * divisor)
        if Double(rounded) < 0.9 * v { rounded += divisor }
        return rounded
    }

    /// The nodes, FSP pairs and hint candidates of a mobile architecture or ResNet-18.
    func buildMobile(_ b: inout GraphBuilder, input: [Int], classes: Int) throws -> (fsp: [FSPPairs.Pair], hints: [String]) {
        let cifar = resolvedStem(input: input) == .cifar
        var stages: [String] = []
        switch kind {
        case .mobilenetv2: try mobilenetV2(&b, cifar: cifar, classes: classes, stages: &stages)
        case .mobilenetv3Small, .mobilenetv3Large: try mobilenetV3(&b, cifar: cifar, classes: classes, stages: &stages)
        case .shufflenetv2: try shufflenetV2(&b, cifar: cifar, classes: classes, stages: &stages)
        case .efficientnetB0, .efficientnetLite0: try efficientNet(&b, cifar: cifar, classes: classes, stages: &stages)
        case .resnet18: try resnet18(&b, cifar: cifar, classes: classes, stages: &stages)
        default: preconditionFailure("\(kind.rawValue) is not a mobile architecture")
        }
        // FSP pairs between consecutive stage boundaries (max-pooled to the smaller map where they
        // differ), hints at every boundary.
        let fsp = zip(stages, stages.dropFirst()).map { FSPPairs.Pair($0, $1) }
        return (fsp, stages)
    }

    /// A convolution, its batch norm and an activation (torchvision's `Conv2dNormActivation`:
    /// `name.0`, `name.1`, `name.2`). `activation`: nil leaves the last off, `.some(nil)` is ReLU
    /// (op set 1's node), `.some(f)` the activation f.
    static func convBN(
        _ b: inout GraphBuilder, _ name: String, _ x: String, out: Int, kernel: Int, stride: Int = 1, groups: Int = 1,
        activation: Activation??, epsilon: Double = 1e-5, momentum: Double = 0.1
    ) -> String {
        let c = b.conv("\(name).0", x, out: out, kernel: kernel, stride: stride, pad: (kernel - 1) / 2, groups: groups, bias: false)
        let y = b.batchnorm("\(name).1", c, epsilon: epsilon, momentum: momentum)
        switch activation {
        case .none: return y
        case .some(.none): return b.relu("\(name).2", y)
        case .some(.some(let f)): return b.activation("\(name).2", y, f)
        }
    }

    static let relu6 = Activation.clip(min: 0, max: 6)
    /// PyTorch's Hardsigmoid: relu6(x + 3) / 6.
    static let hardsigmoid = Activation.hardsigmoid(alpha: 1.0 / 6, beta: 0.5)

    /// torchvision's `SqueezeExcitation`: global average pool, `fc1` (1×1 convolution with bias),
    /// an activation (ReLU where nil), `fc2`, the gate's activation, x times the gate.
    static func squeezeExcitation(
        _ b: inout GraphBuilder, _ name: String, _ x: String, squeeze: Int, activation: Activation?, gate: Activation?
    ) -> String {
        let c = b.channels(x)
        let pooled = b.globalAvgPool("\(name).avgpool", x)
        let fc1 = b.conv("\(name).fc1", pooled, out: squeeze, kernel: 1)
        let act = activation.map { b.activation("\(name).activation", fc1, $0) } ?? b.relu("\(name).activation", fc1)
        let fc2 = b.conv("\(name).fc2", act, out: c, kernel: 1)
        let scale = gate.map { b.activation("\(name).scale_activation", fc2, $0) } ?? b.sigmoid("\(name).scale_activation", fc2)
        return b.mul("\(name).mul", x, scale)
    }

    /// The classifier's dropout: `dropout`, or torchvision's 0.2 where it is not set.
    var classifierDropout: Double { dropout > 0 ? dropout : 0.2 }

    /// Global average pool and flatten, before the classifier.
    static func head(_ b: inout GraphBuilder, _ x: String) -> String { b.flatten("flatten", b.globalAvgPool("avgpool", x)) }

    func mobilenetV2(_ b: inout GraphBuilder, cifar: Bool, classes: Int, stages: inout [String]) throws {
        let settings: [(t: Int, c: Int, n: Int, s: Int)] = [
            (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
        ]
        var inputChannels = Self.makeDivisible(32 * width)
        let lastChannels = Self.makeDivisible(1280 * max(1, width))
        var x = Self.convBN(&b, "features.0", b.inputName, out: inputChannels, kernel: 3, stride: cifar ? 1 : 2, activation: Self.relu6)
        var index = 1
        var firstStrided = cifar
        for (t, c, n, s) in settings {
            let out = Self.makeDivisible(Double(c) * width)
            if s == 2 { stages.append(x) }
            for i in 0..<n {
                var stride = i == 0 ? s : 1
                if stride == 2 && firstStrided {
                    stride = 1
                    firstStrided = false
                }
                let p = "features.\(index).conv"
                let hidden = Int((Double(inputChannels) * Double(t)).rounded())
                var y = x
                var k = 0
                if t != 1 {
                    y = Self.convBN(&b, "\(p).0", y, out: hidden, kernel: 1, activation: Self.relu6)
                    k = 1
                }
                y = Self.convBN(&b, "\(p).\(k)", y, out: hidden, kernel: 3, stride: stride, groups: hidden, activation: Self.relu6)
                y = b.conv("\(p).\(k + 1)", y, out: out, kernel: 1, bias: false)
                y = b.batchnorm("\(p).\(k + 2)", y)
                // The residual as torchvision decides it, from the configured stride (a CIFAR stem's
                // stride-1 block keeps none, as torchvision's block with its stride changed).
                x = (i == 0 ? s : 1) == 1 && inputChannels == out ? b.addNode("features.\(index).add", x, y) : y
                inputChannels = out
                index += 1
            }
        }
        x = Self.convBN(&b, "features.\(index)", x, out: lastChannels, kernel: 1, activation: Self.relu6)
        stages.append(x)
        x = Self.head(&b, x)
        x = b.dropout("classifier.0", x, ratio: classifierDropout)
        _ = b.linear("classifier.1", x, out: classes)
    }

    func mobilenetV3(_ b: inout GraphBuilder, cifar: Bool, classes: Int, stages: inout [String]) throws {
        // (input, kernel, expanded, out, SE, hardswish, stride) as torchvision's `_mobilenet_v3_conf`.
        let large: [(Int, Int, Int, Int, Bool, Bool, Int)] = [
            (16, 3, 16, 16, false, false, 1), (16, 3, 64, 24, false, false, 2), (24, 3, 72, 24, false, false, 1),
            (24, 5, 72, 40, true, false, 2), (40, 5, 120, 40, true, false, 1), (40, 5, 120, 40, true, false, 1),
            (40, 3, 240, 80, false, true, 2), (80, 3, 200, 80, false, true, 1), (80, 3, 184, 80, false, true, 1),
            (80, 3, 184, 80, false, true, 1), (80, 3, 480, 112, true, true, 1), (112, 3, 672, 112, true, true, 1),
            (112, 5, 672, 160, true, true, 2), (160, 5, 960, 160, true, true, 1), (160, 5, 960, 160, true, true, 1),
        ]
        let small: [(Int, Int, Int, Int, Bool, Bool, Int)] = [
            (16, 3, 16, 16, true, false, 2), (16, 3, 72, 24, false, false, 2), (24, 3, 88, 24, false, false, 1),
            (24, 5, 96, 40, true, true, 2), (40, 5, 240, 40, true, true, 1), (40, 5, 240, 40, true, true, 1),
            (40, 5, 120, 48, true, true, 1), (48, 5, 144, 48, true, true, 1), (48, 5, 288, 96, true, true, 2),
            (96, 5, 576, 96, true, true, 1), (96, 5, 576, 96, true, true, 1),
        ]
        let isLarge = kind == .mobilenetv3Large
        let config = isLarge ? large : small
        let adjust = { (c: Int) in Self.makeDivisible(Double(c) * width) }
        let (eps, momentum) = (0.001, 0.01)
        var x = Self.convBN(
            &b, "features.0", b.inputName, out: adjust(config[0].0), kernel: 3, stride: cifar ? 1 : 2, activation: .hardswish,
            epsilon: eps, momentum: momentum)
        var firstStrided = cifar
        for (i, (inRaw, k, expRaw, outRaw, se, hs, s)) in config.enumerated() {
            let (inC, expanded, out) = (adjust(inRaw), adjust(expRaw), adjust(outRaw))
            var stride = s
            if stride == 2 {
                stages.append(x)
                if firstStrided {
                    stride = 1
                    firstStrided = false
                }
            }
            let act: Activation? = hs ? .hardswish : nil
            let p = "features.\(i + 1).block"
            var y = x
            var m = 0
            if expanded != inC {
                y = Self.convBN(&b, "\(p).0", y, out: expanded, kernel: 1, activation: .some(act), epsilon: eps, momentum: momentum)
                m = 1
            }
            y = Self.convBN(
                &b, "\(p).\(m)", y, out: expanded, kernel: k, stride: stride, groups: expanded, activation: .some(act), epsilon: eps,
                momentum: momentum)
            m += 1
            if se {
                y = Self.squeezeExcitation(
                    &b, "\(p).\(m)", y, squeeze: Self.makeDivisible(Double(expanded / 4)), activation: nil, gate: Self.hardsigmoid)
                m += 1
            }
            y = Self.convBN(&b, "\(p).\(m)", y, out: out, kernel: 1, activation: nil, epsilon: eps, momentum: momentum)
            x = s == 1 && inC == out ? b.addNode("features.\(i + 1).add", x, y) : y
        }
        let lastIn = b.channels(x)
        x = Self.convBN(
            &b, "features.\(config.count + 1)", x, out: 6 * lastIn, kernel: 1, activation: .hardswish, epsilon: eps, momentum: momentum)
        stages.append(x)
        x = Self.head(&b, x)
        x = b.activation("classifier.1", b.linear("classifier.0", x, out: adjust(isLarge ? 1280 : 1024)), .hardswish)
        x = b.dropout("classifier.2", x, ratio: classifierDropout)
        _ = b.linear("classifier.3", x, out: classes)
    }

    func shufflenetV2(_ b: inout GraphBuilder, cifar: Bool, classes: Int, stages: inout [String]) throws {
        let tables: [Double: [Int]] = [
            0.5: [24, 48, 96, 192, 1024], 1.0: [24, 116, 232, 464, 1024], 1.5: [24, 176, 352, 704, 1024], 2.0: [24, 244, 488, 976, 2048],
        ]
        guard let widths = tables[width] else {
            throw NNError("shufflenetv2 comes in widths 0.5, 1.0, 1.5 and 2.0 (torchvision's x0_5 … x2_0), not \(width)")
        }
        var x = b.relu(
            "conv1.2",
            b.batchnorm("conv1.1", b.conv("conv1.0", b.inputName, out: widths[0], kernel: 3, stride: cifar ? 1 : 2, pad: 1, bias: false)))
        if !cifar { x = b.maxpool("maxpool", x, kernel: 3, stride: 2, pad: 1) }
        for (s, repeats) in [4, 8, 4].enumerated() {
            stages.append(x)
            let out = widths[s + 1]
            let half = out / 2
            for i in 0..<repeats {
                let p = "stage\(s + 2).\(i)"
                let stride = i == 0 ? 2 : 1
                var left: String
                var right: String
                if stride == 1 {
                    let c = b.channels(x)
                    left = b.sliceChannels("\(p).chunk0", x, 0..<(c / 2))
                    right = b.sliceChannels("\(p).chunk1", x, (c / 2)..<c)
                } else {
                    let c = b.channels(x)
                    left = b.batchnorm(
                        "\(p).branch1.1", b.conv("\(p).branch1.0", x, out: c, kernel: 3, stride: 2, pad: 1, groups: c, bias: false))
                    left = b.relu(
                        "\(p).branch1.4", b.batchnorm("\(p).branch1.3", b.conv("\(p).branch1.2", left, out: half, kernel: 1, bias: false)))
                    right = x
                }
                right = b.relu(
                    "\(p).branch2.2", b.batchnorm("\(p).branch2.1", b.conv("\(p).branch2.0", right, out: half, kernel: 1, bias: false)))
                right = b.batchnorm(
                    "\(p).branch2.4",
                    b.conv("\(p).branch2.3", right, out: half, kernel: 3, stride: stride, pad: 1, groups: half, bias: false))
                right = b.relu(
                    "\(p).branch2.7", b.batchnorm("\(p).branch2.6", b.conv("\(p).branch2.5", right, out: half, kernel: 1, bias: false)))
                x = b.channelShuffle("\(p).shuffle", b.concat("\(p).concat", [left, right]), groups: 2)
            }
        }
        x = b.relu("conv5.2", b.batchnorm("conv5.1", b.conv("conv5.0", x, out: widths[4], kernel: 1, bias: false)))
        stages.append(x)
        _ = b.linear("fc", Self.head(&b, x), out: classes)
    }

    func efficientNet(_ b: inout GraphBuilder, cifar: Bool, classes: Int, stages: inout [String]) throws {
        // (expand ratio, kernel, stride, input, output, layers): torchvision's B0 table (depth 1.0).
        let table: [(Int, Int, Int, Int, Int, Int)] = [
            (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3),
            (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
        ]
        // Lite0 (Google's edge variant): ReLU6 for SiLU, no squeeze-and-excitation, stem and head fixed at 32 and 1280.
        let lite = kind == .efficientnetLite0
        let act: Activation = lite ? Self.relu6 : .silu
        let adjust = { (c: Int) in Self.makeDivisible(Double(c) * width) }
        var x = Self.convBN(&b, "features.0", b.inputName, out: lite ? 32 : adjust(32), kernel: 3, stride: cifar ? 1 : 2, activation: act)
        var firstStrided = cifar
        for (s, (e, k, strideRaw, inRaw, outRaw, layers)) in table.enumerated() {
            if strideRaw == 2 { stages.append(x) }
            for i in 0..<layers {
                let inC = i == 0 ? (s == 0 && lite ? 32 : adjust(inRaw)) : adjust(outRaw)
                let out = adjust(outRaw)
                var stride = i == 0 ? strideRaw : 1
                if stride == 2 && firstStrided {
                    stride = 1
                    firstStrided = false
                }
                let p = "features.\(s + 1).\(i).block"
                let expanded = Self.makeDivisible(Double(inC * e))
                var y = x
                var m = 0
                if expanded != inC {
                    y = Self.convBN(&b, "\(p).0", y, out: expanded, kernel: 1, activation: act)
                    m = 1
                }
                y = Self.convBN(&b, "\(p).\(m)", y, out: expanded, kernel: k, stride: stride, groups: expanded, activation: act)
                m += 1
                if !lite {
                    y = Self.squeezeExcitation(&b, "\(p).\(m)", y, squeeze: max(1, inC / 4), activation: .silu, gate: nil)
                    m += 1
                }
                y = Self.convBN(&b, "\(p).\(m)", y, out: out, kernel: 1, activation: nil)
                x = (i == 0 ? strideRaw : 1) == 1 && inC == out ? b.addNode("features.\(s + 1).\(i).add", x, y) : y
            }
        }
        x = Self.convBN(&b, "features.8", x, out: lite ? 1280 : 4 * b.channels(x), kernel: 1, activation: act)
        stages.append(x)
        x = b.dropout("classifier.0", Self.head(&b, x), ratio: classifierDropout)
        _ = b.linear("classifier.1", x, out: classes)
    }

    func resnet18(_ b: inout GraphBuilder, cifar: Bool, classes: Int, stages: inout [String]) throws {
        let base = max(1, Int((64 * width).rounded()))
        var x = b.relu(
            "relu",
            b.batchnorm(
                "bn1",
                b.conv("conv1", b.inputName, out: base, kernel: cifar ? 3 : 7, stride: cifar ? 1 : 2, pad: cifar ? 1 : 3, bias: false)))
        if !cifar { x = b.maxpool("maxpool", x, kernel: 3, stride: 2, pad: 1) }
        for layer in 1...4 {
            stages.append(x)
            let out = base << (layer - 1)
            for block in 0..<2 {
                let p = "layer\(layer).\(block)"
                let stride = layer > 1 && block == 0 ? 2 : 1
                var y = b.relu(
                    "\(p).relu1", b.batchnorm("\(p).bn1", b.conv("\(p).conv1", x, out: out, kernel: 3, stride: stride, pad: 1, bias: false))
                )
                y = b.batchnorm("\(p).bn2", b.conv("\(p).conv2", y, out: out, kernel: 3, pad: 1, bias: false))
                var shortcut = x
                if stride != 1 || b.channels(x) != out {
                    shortcut = b.batchnorm(
                        "\(p).downsample.1", b.conv("\(p).downsample.0", x, out: out, kernel: 1, stride: stride, bias: false))
                }
                x = b.relu("\(p).relu2", b.addNode("\(p).add", y, shortcut))
            }
        }
        stages.append(x)
        _ = b.linear("fc", Self.head(&b, x), out: classes)
    }
}
