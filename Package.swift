// swift-tools-version: 6.1
import Foundation
import PackageDescription

// The direct convolution (Sources/KDTensor/Kernels/DirectConv.swift) is SIMD arithmetic: on x86-64
// it needs AVX2 + FMA code generation, or each fused multiply-add becomes a library call
// (measured: 0.65 vs 79 GFLOP/s per core). Every machine of this project's kind has both.
// Where the building machine also has AVX-512 (as the project's machines do), KDTensor is built
// for it and the kernel gains its 16-lane, 32-register tiles (`-D KDTOOL_AVX512`): twice the
// multiply-adds per instruction. KDTOOL_PORTABLE=1 builds for AVX2 only. kdtool checks the CPU
// it runs on against the build and says what is missing rather than dying of SIGILL.
#if arch(x86_64)
    let cpuFlags: Set<Substring> = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return Set(line.split(separator: " "))
    }()
    let avx512 =
        ProcessInfo.processInfo.environment["KDTOOL_PORTABLE"] == nil
        && ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy { cpuFlags.contains($0) }
    let targetSettings: [SwiftSetting] =
        avx512
        ? [.unsafeFlags(["-target-cpu", "skylake-avx512"]), .define("KDTOOL_AVX512")]
        : [.unsafeFlags(["-target-cpu", "haswell"])]
#else
    let targetSettings: [SwiftSetting] = []
#endif
// The kernels are generic over tile shape and vector width so that the optimizer specialises
// each; unoptimized (a debug build, which `swift test` makes) every multiply-add would go through
// a protocol witness. KDTensor is therefore optimized in debug builds too.
let simdSettings = targetSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "kdtool",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kdtool", targets: ["kdtool"]),
        .library(name: "KDIO", targets: ["KDIO"]),
        .library(name: "KDBundle", targets: ["KDBundle"]),
        .library(name: "KDTensor", targets: ["KDTensor"]),
        .library(name: "KDNN", targets: ["KDNN"]),
        .library(name: "KDData", targets: ["KDData"]),
        .library(name: "KDInference", targets: ["KDInference"]),
        .library(name: "KDQuant", targets: ["KDQuant"]),
        .library(name: "KDInterop", targets: ["KDInterop"]),
        .library(name: "KDDistill", targets: ["KDDistill"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries, each through a small module map resolved with pkg-config.
        .systemLibrary(
            name: "CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CArchive", pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(
            name: "CImage", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev", "libjpeg62-turbo-dev"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),

        // Untrusted input and atomic output: checked sizes, regular-file reads, atomic writes, locks.
        .target(name: "KDIO"),
        .target(name: "KDBundle", dependencies: ["KDIO", "CZlib", "KDTensor"]),
        .target(name: "KDTensor", dependencies: ["CBLAS"], swiftSettings: simdSettings),
        .target(name: "KDNN", dependencies: ["KDIO", "KDTensor", "KDBundle", "KDData"]),
        // Data-parallel runs under mpirun: Open MPI opened with dlopen only when the launcher started
        // this process as one rank of several, so a plain build and run need no MPI (docs/distributed.md).
        .target(name: "KDMPI", dependencies: ["KDTensor"]),
        .target(name: "KDData", dependencies: ["KDIO", "KDTensor", "CArchive", "CImage", "CZlib", "CImageSupport"]),
        .target(name: "KDInference", dependencies: ["KDIO", "KDNN", "KDData"]),
        .target(name: "KDDistill", dependencies: ["KDIO", "KDNN", "KDData", "KDBundle"]),
        .target(name: "KDQuant", dependencies: ["KDNN", "KDData", "KDBundle"]),
        // Sources/KDInterop/Generated/onnx.pb.swift is generated once by tools/gen-onnx-swift (protoc + protoc-gen-swift).
        .target(
            name: "KDInterop",
            dependencies: ["KDIO", "KDNN", "CZlib", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // libjpeg reports errors by longjmp, which Swift cannot catch: a few lines of C do.
        .target(name: "CImageSupport", dependencies: ["CImage"]),
        .executableTarget(
            name: "kdtool",
            dependencies: [
                "KDIO", "KDBundle", "KDTensor", "KDNN", "KDData", "KDInference", "KDDistill", "KDQuant", "KDInterop", "KDMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ]),

        // Fixtures every test target can write (an image folder, a CIFAR-format tarball), so the
        // tests need nothing beside the clone; a plain target under Tests/, in no product.
        .target(name: "KDTestSupport", dependencies: ["KDTensor", "KDData", "CArchive"], path: "Tests/Support"),

        .testTarget(name: "KDIOTests", dependencies: ["KDIO"]),
        .testTarget(name: "KDBundleTests", dependencies: ["KDBundle"]),
        .testTarget(name: "KDTensorTests", dependencies: ["KDTensor", "KDMPI", "KDTestSupport"], resources: [.copy("Golden")]),
        .testTarget(name: "KDNNTests", dependencies: ["KDNN", "KDData", "KDIO", "KDTestSupport"]),
        .testTarget(name: "KDDataTests", dependencies: ["KDData", "KDTestSupport"]),
        .testTarget(name: "KDInferenceTests", dependencies: ["KDInference", "CZlib", "KDTestSupport"]),
        .testTarget(name: "KDDistillTests", dependencies: ["KDDistill", "KDData"], resources: [.copy("Golden")]),
        .testTarget(name: "KDQuantTests", dependencies: ["KDQuant", "KDData"], resources: [.copy("Golden")]),
        .testTarget(name: "KDInteropTests", dependencies: ["KDInterop", "KDQuant", "KDDistill"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CShimsTests", dependencies: ["CBLAS", "CArchive", "CImage", "CZlib"]),
        // Runs the built binary as a user would; depending on it makes `swift test` build it first.
        // Hostile/ is the hostile-input corpus the tests copy and replay from the source tree.
        .testTarget(name: "KDToolTests", dependencies: ["kdtool", "KDTestSupport"], exclude: ["Hostile"]),
    ]
)
