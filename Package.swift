// swift-tools-version:6.1
// Tern: an edge inference server that speaks Triton's KServe v2 protocol over HTTP and gRPC and runs
// models with ONNX Runtime. The target layout and dependency direction follow shared/DESIGN.md:
// tern → TernCLI → {TernHTTP, TernGRPC (both on TernTLS), TernMetrics, TernONNXRuntime, TernDevice, TernStore, TernHybrid,
// TernExperiments} → {TernRuntime, TernClient} → TernCore. TernClient is the KServe v2 client (HTTP/1.1 and gRPC) with
// the protocol's generated messages; the gRPC frontend imports it for those messages, no pattern imports a frontend.
// See docs/architecture.md.
// TernHTTP serves on SwiftNIO directly (see Sources/TernHTTP/Internal/HTTPServer.swift for why).
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "tern",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tern", targets: ["tern"]),
        .library(name: "TernCore", targets: ["TernCore"]),
        .library(name: "TernRuntime", targets: ["TernRuntime"]),
        .library(name: "TernONNXRuntime", targets: ["TernONNXRuntime"]),
        .library(name: "TernHTTP", targets: ["TernHTTP"]),
        .library(name: "TernGRPC", targets: ["TernGRPC"]),
        .library(name: "TernMetrics", targets: ["TernMetrics"]),
        .library(name: "TernDevice", targets: ["TernDevice"]),
        .library(name: "TernStore", targets: ["TernStore"]),
        .library(name: "TernHybrid", targets: ["TernHybrid"]),
        .library(name: "TernExperiments", targets: ["TernExperiments"]),
        .library(name: "TernFederated", targets: ["TernFederated"]),
        .library(name: "TernTraining", targets: ["TernTraining"]),
        .library(name: "TernTesting", targets: ["TernTesting"]),
        .library(name: "TernTLS", targets: ["TernTLS"]),
        .library(name: "TernClient", targets: ["TernClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", exact: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams.git", exact: "6.2.2"),
    ],
    targets: [
        .target(
            name: "TernCore",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The C side of the CUDA runtime calls that pass a struct by value (see its header).
        .target(name: "CTernCUDA"),
        .target(
            name: "TernRuntime",
            dependencies: [
                "TernCore",
                "CTernCUDA",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernONNXRuntime",
            dependencies: ["TernCore"],
            swiftSettings: strict
        ),
        .target(
            name: "TernMetrics",
            dependencies: [
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernDevice",
            dependencies: [
                "TernRuntime",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernClient",
            dependencies: [
                "TernCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernHybrid",
            dependencies: [
                "TernRuntime", "TernClient",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernExperiments",
            dependencies: [
                "TernRuntime",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernTraining",
            dependencies: ["TernCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strict
        ),
        .target(
            name: "TernFederated",
            dependencies: [
                "TernRuntime", "TernTraining",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernStore",
            dependencies: [
                "TernRuntime",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernTLS",
            dependencies: [
                "TernCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernHTTP",
            dependencies: [
                "TernRuntime", "TernTLS", "TernClient",
                "TernMetrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernGRPC",
            dependencies: [
                "TernRuntime", "TernTLS", "TernClient",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TernCLI",
            dependencies: [
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "TernRuntime", "TernONNXRuntime", "TernHTTP", "TernGRPC", "TernTLS", "TernClient", "TernMetrics", "TernDevice", "TernStore", "TernHybrid", "TernExperiments", "TernFederated", "TernTraining",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "tern", dependencies: ["TernCLI"], swiftSettings: strict),
        .target(
            name: "TernTesting",
            dependencies: [
                "TernRuntime", "TernONNXRuntime", "TernHTTP", "TernGRPC", "TernClient",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "TernCoreTests", dependencies: ["TernCore"], swiftSettings: strict),
        .testTarget(name: "TernONNXRuntimeTests", dependencies: ["TernONNXRuntime", "TernTesting"], swiftSettings: strict),
        .testTarget(name: "TernRuntimeTests", dependencies: ["TernRuntime", "TernTesting"], swiftSettings: strict),
        .testTarget(
            name: "TernHTTPTests",
            dependencies: [
                "TernHTTP", "TernClient", "TernTesting", "TernTLS", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "TernGRPCTests",
            dependencies: [
                "TernGRPC", "TernClient", "TernTesting", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict),
        .testTarget(name: "TernClientTests", dependencies: ["TernClient"], swiftSettings: strict),
        .testTarget(name: "TernMetricsTests", dependencies: ["TernMetrics"], swiftSettings: strict),
        .testTarget(name: "TernHybridTests", dependencies: ["TernHybrid", "TernRuntime", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "TernStoreTests", dependencies: ["TernStore"], swiftSettings: strict),
        .testTarget(
            name: "TernExperimentsTests", dependencies: ["TernExperiments", "TernRuntime", "TernTesting", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .testTarget(name: "TernTrainingTests", dependencies: ["TernTraining", "TernCore"], swiftSettings: strict),
        .testTarget(
            name: "TernFederatedTests", dependencies: ["TernFederated", "TernTraining", "TernCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .testTarget(name: "TernDeviceTests", dependencies: ["TernDevice", "TernMetrics", "TernTesting"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
