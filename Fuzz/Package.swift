// swift-tools-version:6.1
// libFuzzer targets for Tern's parsers of untrusted input. Built apart from the main package
// (its own scratch folder) with `-sanitize=fuzzer,address`; see `make fuzz` in the main Makefile.
// Each target is one `LLVMFuzzerTestOneInput`; seeds live in Corpus/<target>/.
import PackageDescription

let fuzzTargets: [(String, [Target.Dependency])] = [
    ("FuzzHTTPRequest", [.product(name: "TernHTTP", package: "tern"), .product(name: "TernRuntime", package: "tern"),
                         .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOCore", package: "swift-nio")]),
    ("FuzzInferJSON", [.product(name: "TernHTTP", package: "tern"), .product(name: "TernClient", package: "tern"), .product(name: "TernRuntime", package: "tern"),
                       .product(name: "TernCore", package: "tern"), .product(name: "NIOCore", package: "swift-nio")]),
    ("FuzzGRPCInfer", [.product(name: "TernGRPC", package: "tern"), .product(name: "TernClient", package: "tern"), .product(name: "TernRuntime", package: "tern"),
                       .product(name: "TernCore", package: "tern")]),
    ("FuzzModelConfig", [.product(name: "TernCore", package: "tern")]),
    ("FuzzNumpy", [.product(name: "TernCore", package: "tern")]),
    ("FuzzTegrastats", [.product(name: "TernDevice", package: "tern")]),
]

let package = Package(
    name: "TernFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "tern", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
    ],
    targets: [.target(name: "FuzzDriver")] + fuzzTargets.map { name, dependencies in
        .executableTarget(name: name, dependencies: ["FuzzDriver"] + dependencies)
    },
    swiftLanguageModes: [.v6]
)
