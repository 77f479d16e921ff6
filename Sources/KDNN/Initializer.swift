import KDTensor

/// Weight initialisation schemes.
public enum InitScheme: String, CaseIterable, Sendable {
    /// PyTorch's defaults: U(±1/√fan_in) for weights and biases (kaiming_uniform with a = √5).
    case torch
    /// He/MSRA: N(0, 2/fan_out) for convolutions, N(0, 2/fan_in) for linear layers; zero biases.
    case he
}

extension GraphBuilder {
    /// Creates the tensors with values drawn from `seed`: each tensor has its own random stream
    /// (keyed by its position), so adding a layer does not change the others' values.
    public func initialize(_ scheme: InitScheme, seed: UInt64) -> (parameters: [String: Tensor], buffers: [String: Tensor]) {
        var params: [String: Tensor] = [:]
        var buffers: [String: Tensor] = [:]
        for (i, t) in tensors.enumerated() {
            var rng = RandomSource(seed: seed, stream: 0x1417, UInt64(i))
            let tensor = Tensor(uninitialized: t.shape)
            switch t.kind {
            case .ones: tensor.fill(1)
            case .zeros: tensor.fill(0)
            case .constant(let values): for j in 0..<tensor.count { tensor[j] = values[j] }
            case .weight(let fanIn, let fanOut):
                switch scheme {
                case .torch:
                    let bound = 1 / Float(fanIn).squareRoot()
                    for j in 0..<tensor.count { tensor[j] = (rng.nextFloat() * 2 - 1) * bound }
                case .he:
                    let std = (2 / Float(t.shape.count == 4 ? fanOut : fanIn)).squareRoot()
                    for j in 0..<tensor.count { tensor[j] = rng.nextNormal() * std }
                }
            case .bias(let fanIn):
                if scheme == .torch {
                    let bound = 1 / Float(fanIn).squareRoot()
                    for j in 0..<tensor.count { tensor[j] = (rng.nextFloat() * 2 - 1) * bound }
                } else {
                    tensor.fill(0)
                }
            }
            if identityWeights.contains(t.name) {
                tensor.fill(0)
                for c in 0..<min(t.shape[0], t.shape[1]) { tensor[c * t.shape[1] + c] = 1 }
            }
            if t.buffer { buffers[t.name] = tensor } else { params[t.name] = tensor }
        }
        return (params, buffers)
    }
}
