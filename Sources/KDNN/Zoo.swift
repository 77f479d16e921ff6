import KDBundle
import KDTensor

/// Architectures by name (`kdtool init --arch NAME`). Each declares its FSP-capable layer pairs and
/// hint/guided candidates, which go into the bundle's FSPP and HINT sections.
public struct Architecture: Sendable {
    public enum Kind: String, CaseIterable, Sendable {
        case mlp, lenet5, resnet8, resnet14, resnet20, resnet26, resnet32, resnet56
        case fitnetThin = "fitnet-thin"
        case mobilenetv2
        case mobilenetv3Small = "mobilenetv3-small"
        case mobilenetv3Large = "mobilenetv3-large"
        case shufflenetv2
        case efficientnetLite0 = "efficientnet-lite0"
        case efficientnetB0 = "efficientnet-b0"
        case resnet18

        /// The architectures built as torchvision builds them (Zoo+Mobile.swift).
        public var isMobile: Bool {
            [.mobilenetv2, .mobilenetv3Small, .mobilenetv3Large, .shufflenetv2, .efficientnetLite0, .efficientnetB0, .resnet18]
                .contains(self)
        }
    }
    public enum Shortcut: String, CaseIterable, Sendable { case a, b }

    public var kind: Kind
    /// Channel multiplier (lenet5, fitnet-thin) or base width (ResNets: 16 by default).
    public var width: Double = 1
    /// Hidden layer sizes for `mlp`.
    public var hidden: [Int] = [800, 800]
    public var shortcut: Shortcut = .b
    public var dropout: Double = 0
    /// The mobile architectures' and ResNet-18's stem; nil picks it from the input size.
    public var stem: Stem?

    public init(_ kind: Kind) { self.kind = kind }

    public init(name: String) throws {
        guard let k = Kind(rawValue: name) else {
            throw NNError("unknown architecture '\(name)'; choose one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self.init(k)
    }

    /// Blocks per stage of the CIFAR ResNets: depth = 6n + 2.
    var resnetBlocks: Int? {
        switch kind {
        case .resnet8: 1
        case .resnet14: 2
        case .resnet20: 3
        case .resnet26: 4
        case .resnet32: 5
        case .resnet56: 9
        default: nil
        }
    }

    /// Builds an initialised model for `input` = [C, H, W] and `classes` outputs.
    public func build(input: [Int], classes: Int, seed: UInt64, initScheme: InitScheme = .torch) throws -> Model {
        guard input.count == 3, input.allSatisfy({ $0 > 0 }), classes > 0 else {
            throw NNError("input must be C×H×W with positive sizes and classes > 0, got \(input) and \(classes)")
        }
        var b = GraphBuilder(input: input)
        var fsp: [FSPPairs.Pair] = []
        var hintNodes: [String] = []
        let scaled = { (c: Int) in max(1, Int((Double(c) * width).rounded())) }
        switch kind {
        case let k where k.isMobile:
            (fsp, hintNodes) = try buildMobile(&b, input: input, classes: classes)
        case .mlp:
            var x = b.flatten("flatten", b.inputName)
            for (i, h) in hidden.enumerated() {
                x = b.relu("relu\(i + 1)", b.linear("fc\(i + 1)", x, out: h))
                hintNodes.append(x)
                if dropout > 0 { x = b.dropout("drop\(i + 1)", x, ratio: dropout) }
            }
            _ = b.linear("fc\(hidden.count + 1)", x, out: classes)
        case .lenet5:
            guard input[1] >= 12, input[2] >= 12 else { throw NNError("lenet5 needs inputs of at least 12×12, got \(input)") }
            var x = b.relu("relu1", b.conv("conv1", b.inputName, out: scaled(6), kernel: 5, pad: 2))
            x = b.maxpool("pool1", x, kernel: 2, stride: 2)
            let p1 = x
            x = b.relu("relu2", b.conv("conv2", x, out: scaled(16), kernel: 5))
            x = b.maxpool("pool2", x, kernel: 2, stride: 2)
            fsp = [.init("relu1", "pool1")]
            hintNodes = [p1, x]
            x = b.flatten("flatten", x)
            x = b.relu("relu3", b.linear("fc1", x, out: scaled(120)))
            x = b.relu("relu4", b.linear("fc2", x, out: scaled(84)))
            _ = b.linear("fc3", x, out: classes)
        case .fitnetThin:
            // FitNet-1 style: deep and thin, three pooled stages of 3×3 convolutions, no batch norm.
            let stages = [[16, 16, 16], [32, 32, 32], [48, 48, 64]]
            var x = b.inputName
            var layer = 0
            for (s, widths) in stages.enumerated() {
                for w in widths {
                    layer += 1
                    x = b.relu("relu\(layer)", b.conv("conv\(layer)", x, out: scaled(w), kernel: 3, pad: 1))
                }
                hintNodes.append(x)
                if s < 2 { x = b.maxpool("pool\(s + 1)", x, kernel: 2, stride: 2) }
            }
            x = b.flatten("flatten", b.globalAvgPool("pool", x))
            _ = b.linear("fc", x, out: classes)
        default:
            let n = resnetBlocks!
            let base = max(1, Int((16 * width).rounded()))
            var x = b.relu("relu1", b.batchnorm("bn1", b.conv("conv1", b.inputName, out: base, kernel: 3, pad: 1, bias: false)))
            var stageInput = x
            for stage in 1...3 {
                let out = base << (stage - 1)
                for block in 1...n {
                    let p = "stage\(stage).block\(block)"
                    let stride = stage > 1 && block == 1 ? 2 : 1
                    var y = b.relu(
                        "\(p).relu1",
                        b.batchnorm("\(p).bn1", b.conv("\(p).conv1", x, out: out, kernel: 3, stride: stride, pad: 1, bias: false)))
                    y = b.batchnorm("\(p).bn2", b.conv("\(p).conv2", y, out: out, kernel: 3, pad: 1, bias: false))
                    var shortcut = x
                    if stride != 1 || b.channels(x) != out {
                        switch self.shortcut {
                        case .b:
                            shortcut = b.batchnorm(
                                "\(p).shortcut.bn", b.conv("\(p).shortcut.conv", x, out: out, kernel: 1, stride: stride, bias: false))
                        case .a:
                            shortcut = b.zeroPadShortcut("\(p).shortcut.pad", x, out: out, stride: stride)
                        }
                    }
                    x = b.relu("\(p).relu2", b.addNode("\(p).add", y, shortcut))
                }
                fsp.append(.init(stageInput, x))
                hintNodes.append(x)
                stageInput = x
            }
            x = b.flatten("flatten", b.globalAvgPool("pool", x))
            _ = b.linear("fc", x, out: classes)
        }
        let (params, buffers) = b.initialize(initScheme, seed: seed)
        let graph = Graph(
            inputs: [.init(name: b.inputName, shape: [-1] + input)], outputs: [b.nodes.last!.outputs[0]], outputKind: .softmax,
            nodes: b.nodes)
        // Hints (teacher side) and guided layers (student side) default to the middle candidate.
        let ordered = hintNodes.isEmpty ? [] : [hintNodes[hintNodes.count / 2]] + hintNodes.filter { $0 != hintNodes[hintNodes.count / 2] }
        return try Model(
            graph: graph, parameters: params, buffers: buffers, frozen: b.identityWeights,
            fspPairs: fsp.isEmpty ? nil : FSPPairs(fsp), hints: ordered.isEmpty ? nil : Hints(hints: ordered, guided: ordered))
    }

    /// A one-line description for provenance and `inspect`.
    public var summary: String {
        switch kind {
        case .mlp: "mlp hidden \(hidden.map(String.init).joined(separator: ","))"
        case .lenet5, .fitnetThin: "\(kind.rawValue) width \(width)"
        case let k where k.isMobile: "\(kind.rawValue) width \(width) stem \(stem?.rawValue ?? "auto")"
        default: "\(kind.rawValue) width \(Int((16 * width).rounded())) shortcut \(shortcut.rawValue)"
        }
    }
}
