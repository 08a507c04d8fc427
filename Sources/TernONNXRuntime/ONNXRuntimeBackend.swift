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
        try configure(options, config: config, instance: instance, logger: logger)
        let session = try ORTSession(environment: environment, modelPath: modelPath.path, options: options)
        return ONNXRuntimeInstance(session: session)
    }

    /// Session options from the config, with Triton's onnxruntime backend's parameter names.
    func configure(
        _ options: ORTSessionOptions, config: ModelConfig, instance: InstancePlacement, logger: Logger
    ) throws(TernError) {
        func intParameter(_ key: String) -> Int? { config.parameters[key].flatMap { Int($0.stringValue) } }
        let intra = intParameter("intra_op_thread_count") ?? instance.intraOpThreads
        let inter = intParameter("inter_op_thread_count") ?? 1
        try options.setThreads(intraOp: max(intra, 0), interOp: max(inter, 0))
        // Spinning worker threads burn a core while idle; edge boxes want them asleep.
        try options.addConfigEntry("session.intra_op.allow_spinning", config.parameters["tern.allow_spinning"]?.stringValue ?? "0")
        try options.setGraphOptimization(Self.optimizationLevel(config))

        var wantsCUDA = false
        if case .gpu(let device) = instance.kind { wantsCUDA = true; _ = device }
        let accelerators = config.optimization.executionAccelerators
        for accelerator in accelerators.gpuExecutionAccelerator {
            switch accelerator.name.lowercased() {
            case "tensorrt":
                guard availableProviders.contains("TensorrtExecutionProvider") else {
                    logger.warning("TensorRT requested in config but the loaded ONNX Runtime has no TensorRT provider; using CPU",
                                   metadata: ["model": .string(config.name)])
                    continue
                }
                try options.appendTensorRT(options: Self.tensorRTOptions(accelerator.parameters, instance: instance))
            case "cuda":
                wantsCUDA = true
            default:
                logger.warning("unknown gpu_execution_accelerator '\(accelerator.name)' ignored", metadata: ["model": .string(config.name)])
            }
        }
        for accelerator in accelerators.cpuExecutionAccelerator {
            logger.warning("cpu_execution_accelerator '\(accelerator.name)' is not supported; using the default CPU provider",
                           metadata: ["model": .string(config.name)])
        }
        if wantsCUDA {
            if availableProviders.contains("CUDAExecutionProvider") {
                var cudaOptions: [String: String] = [:]
                if case .gpu(let device) = instance.kind { cudaOptions["device_id"] = String(device) }
                for accelerator in accelerators.gpuExecutionAccelerator where accelerator.name.lowercased() == "cuda" {
                    cudaOptions.merge(accelerator.parameters) { _, new in new }
                }
                try options.appendCUDA(options: cudaOptions)
            } else {
                logger.warning("CUDA requested (KIND_GPU or a cuda accelerator) but the loaded ONNX Runtime has no CUDA provider; using CPU",
                               metadata: ["model": .string(config.name)])
            }
        }
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

    /// Triton's TensorRT accelerator parameters translated to ORT's TensorRT provider options.
    static func tensorRTOptions(_ parameters: [String: String], instance: InstancePlacement) -> [String: String] {
        var options: [String: String] = [:]
        if case .gpu(let device) = instance.kind { options["device_id"] = String(device) }
        for (key, value) in parameters {
            switch key {
            case "precision_mode":
                if value.uppercased() == "FP16" { options["trt_fp16_enable"] = "1" }
                if value.uppercased() == "INT8" { options["trt_int8_enable"] = "1" }
            case "max_workspace_size_bytes": options["trt_max_workspace_size"] = value
            case "max_cached_engines": break
            default: options[key] = value
            }
        }
        return options
    }
}

/// One ORT session serving one instance of a model.
final class ONNXRuntimeInstance: ModelInstance {
    let session: ORTSession
    var signature: ModelSignature { session.signature }

    init(session: ORTSession) { self.session = session }

    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        try session.run(inputs: inputs, outputs: outputNames)
    }
}
