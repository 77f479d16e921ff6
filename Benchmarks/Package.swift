// swift-tools-version: 6.1
// Benchmarks live in their own package so the main build stays fast.
//   cd Benchmarks && swift package -c release benchmark --target BundleIO
//   cd Benchmarks && swift package -c release benchmark --target TrainStep   (PyTorch peer: tools/setup-peers)
//   cd Benchmarks && swift package -c release benchmark --target Inference   (ONNX Runtime peer: tools/setup-peers)
import Foundation
import PackageDescription

// A path dependency is named after its folder, which differs between clones.
let mainPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "kdtool-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "BundleIO",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KDBundle", package: mainPackage),
            ],
            path: "Benchmarks/BundleIO",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TrainStep",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KDNN", package: mainPackage),
                .product(name: "KDTensor", package: mainPackage),
            ],
            path: "Benchmarks/TrainStep",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "Inference",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KDNN", package: mainPackage),
                .product(name: "KDData", package: mainPackage),
                .product(name: "KDInference", package: mainPackage),
                .product(name: "KDBundle", package: mainPackage),
            ],
            path: "Benchmarks/Inference",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
