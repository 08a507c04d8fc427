import Foundation
import Logging
import TernCore

/// Runs ONNX models with ONNX Runtime, loaded at run time through its C API (no link-time
/// dependency: the same binary drives the pip CPU build, onnxruntime-gpu or a JetPack build).
public final class ONNXRuntimeBackend: Backend, Sendable {
    /// The `backend` name in config.pbtxt this backend serves.
    public let name = "onnxruntime"
    /// The config.pbtxt `platform` name this backend also answers to.
    public let platforms = ["onnxruntime_onnx"]
    /// The model file looked for in a version folder when the config names none.
    public let defaultModelFilename = "model.onnx"

    /// Path of the loaded library.
    public var libraryPath: String { environment.library.path }
    /// Version of the loaded library, e.g. "1.32.0".
    public var libraryVersion: String { environment.library.version }
    /// The C API version in use.
    public var apiVersion: UInt32 { environment.library.apiVersion }
    /// Execution providers the loaded library was built with.
    public let availableProviders: [String]

    let environment: ORTEnvironment
    private let logger: Logger

    /// Loads the library found by `locator` and creates the ORT environment, whose log lines go
    /// to `logger`.
    public init(locator: ORTLibraryLocator = ORTLibraryLocator(), logger: Logger) throws(TernError) {
        let library = try ORTLibrary(path: try locator.locate())
        self.environment = try ORTEnvironment(library: library, logger: logger)
        self.availableProviders = library.availableProviders()
        self.logger = logger
        logger.info(
            "ONNX Runtime loaded",
            metadata: [
                "path": .string(library.path), "version": .string(library.version),
                "api": .stringConvertible(library.apiVersion), "providers": .string(availableProviders.joined(separator: ",")),
            ])
    }

    /// Opens an ONNX Runtime session on the model file, with session options from the config and the instance's
    /// placement.
    public func makeInstance(
        modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger
    ) throws -> any ModelInstance {
        let options = try ORTSessionOptions(library: environment.library)
        let plan = try configure(options, config: config, instance: instance, logger: logger)
        let session = try ORTSession(environment: environment, modelPath: modelPath.path, options: options)
        return ONNXRuntimeInstance(session: session, plan: plan)
    }

    /// Session options from the config, with Triton's onnxruntime backend's parameter names.
    @discardableResult
    func configure(
        _ options: ORTSessionOptions, config: ModelConfig, instance: InstancePlacement, logger: Logger
    ) throws(TernError) -> ExecutionProviderPlan {
        func intParameter(_ key: String) -> Int? { config.parameters[key].flatMap { Int($0.stringValue) } }
        let intra = intParameter("intra_op_thread_count") ?? instance.intraOpThreads
        let inter = intParameter("inter_op_thread_count") ?? 1
        try options.setThreads(intraOp: max(intra, 0), interOp: max(inter, 0))
        // Spinning worker threads burn a core while idle; edge boxes want them asleep.
        try options.addConfigEntry("session.intra_op.allow_spinning", config.parameters["tern.allow_spinning"]?.stringValue ?? "0")
        try options.setGraphOptimization(Self.optimizationLevel(config))

        let plan = try ExecutionProviderPlan.make(
            config: config, instance: instance, available: availableProviders, libraryPath: environment.library.path)
        for provider in plan.providers {
            switch provider.name {
            case ExecutionProviderPlan.tensorRT: try options.appendTensorRT(options: provider.options)
            case ExecutionProviderPlan.cuda: try options.appendCUDA(options: provider.options)
            case ExecutionProviderPlan.openVINO: try options.appendOpenVINO(options: provider.options)
            default:
                throw TernError(.unimplemented,
                    "model '\(config.name)': the library offers \(provider.name), but Tern cannot append it (TensorRT, CUDA and OpenVINO only)")
            }
        }
        if !plan.fallbacks.isEmpty, instance.index == 0 {
            logger.warning("execution providers missing from the ONNX Runtime library; running on the CPU as the config allows",
                           metadata: ["model": .string(config.name), "missing": .string(plan.fallbacks.joined(separator: ",")),
                                      "library": .string(environment.library.path)])
        }
        return plan
    }

    /// Triton's mapping of `optimization { graph { level } }`: -1 basic, 0 (default) all,
    /// 1 extended; `parameters { key: "tern.graph_optimization" }` may name a level directly.
    static func optimizationLevel(_ config: ModelConfig) -> ORTGraphOptimizationLevel {
        switch config.parameters["tern.graph_optimization"]?.stringValue.lowercased() {
        case "disable", "none": return .disableAll
        case "basic": return .basic
        case "extended": return .extended
        case "all": return .all
        default: break
        }
        switch config.optimization.graph.level {
        case ..<(-1): return .disableAll
        case -1: return .basic
        case 1: return .extended
        default: return .all
        }
    }
}

/// One ORT session serving one instance of a model.
final class ONNXRuntimeInstance: ModelInstance {
    let session: ORTSession
    let plan: ExecutionProviderPlan
    var signature: ModelSignature { session.signature }
    var executionProviders: [String] { plan.providers.map(\.name) + ["CPUExecutionProvider"] }
    var providerFallbacks: [String] { plan.fallbacks }

    init(session: ORTSession, plan: ExecutionProviderPlan) {
        self.session = session
        self.plan = plan
    }

    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        try session.run(inputs: inputs, outputs: outputNames)
    }
}
