import Foundation
import TernCore

/// The execution providers one instance's session gets, worked out from Triton's config fields
/// the way Triton's onnxruntime backend reads them, before any ONNX Runtime call: a pure value,
/// so the exact option keys and values are tested without a GPU.
///
/// - `instance_group { kind: KIND_GPU }` → CUDA with the instance's `device_id`;
/// - `optimization { execution_accelerators { gpu_execution_accelerator: [...] } }`: `tensorrt`
///   → TensorRT (Triton's keys translated to ORT's `trt_*` options, DLA included), `cuda` → CUDA
///   options (`cudnn_conv_algo_search`, `arena_extend_strategy`, `gpu_mem_limit`, ...);
/// - `cpu_execution_accelerator: [ { name: "openvino" } ]` → OpenVINO (`device_type`, `precision`, ...).
///
/// Providers are appended in the order the config lists them; ONNX Runtime's CPU provider is
/// always last (it takes what the others do not). A provider the loaded library lacks fails the
/// load with a message naming it, the library and what it offers, unless the config allows
/// `parameters { key: "tern.accelerator.fallback" value: { string_value: "cpu" } }`: then the
/// provider is left out and `fallbacks` says so.
public struct ExecutionProviderPlan: Sendable, Equatable {
    /// One provider to append, with its ORT option keys and values.
    public struct Provider: Sendable, Equatable {
        /// The provider's ORT registration name, e.g. `CUDAExecutionProvider`.
        public var name: String
        /// ORT's provider options (`_V2` entries, or the generic append for OpenVINO).
        public var options: [String: String]
    }

    /// The providers to append, in order (the CPU provider follows implicitly).
    public var providers: [Provider]
    /// Providers the config asked for that the library lacks and the fallback left out, by name.
    public var fallbacks: [String]

    /// ORT's registration names.
    public static let cuda = "CUDAExecutionProvider"
    /// ORT's registration name of the TensorRT provider.
    public static let tensorRT = "TensorrtExecutionProvider"
    /// ORT's registration name of the OpenVINO provider.
    public static let openVINO = "OpenVINOExecutionProvider"

    /// The plan for `instance` of the model `config` describes, given the providers the loaded
    /// library offers (`GetAvailableProviders`) and its path (for the error message).
    public static func make(
        config: ModelConfig, instance: InstancePlacement, available: [String], libraryPath: String
    ) throws(TernError) -> ExecutionProviderPlan {
        let model = config.name
        let accelerators = config.optimization.executionAccelerators
        // Every accelerator is checked, whatever the instance's kind: a config error is one on
        // every instance. As in Triton, GPU accelerators apply to KIND_GPU instances only.
        // A `cuda` entry only adds options: CUDA itself always comes once, after TensorRT (which
        // takes the nodes it can; CUDA takes the rest), as in Triton's onnxruntime backend.
        var gpuProviders: [Provider] = []
        var cudaParameters = modelLevelCUDAParameters(config)
        for accelerator in accelerators.gpuExecutionAccelerator {
            switch accelerator.name.lowercased() {
            case "tensorrt":
                gpuProviders.append(Provider(name: tensorRT, options: try tensorRTOptions(accelerator.parameters, instance: instance, model: model)))
            case "cuda":
                cudaParameters.merge(accelerator.parameters) { _, accelerator in accelerator }
            default:
                throw .invalidArgument(
                    "model '\(model)': unknown gpu_execution_accelerator '\(accelerator.name)' (Tern knows tensorrt and cuda)")
            }
        }
        gpuProviders.append(Provider(name: cuda, options: try cudaOptions(cudaParameters, instance: instance, model: model)))
        var cpuProviders: [Provider] = []
        for accelerator in accelerators.cpuExecutionAccelerator {
            switch accelerator.name.lowercased() {
            case "openvino":
                cpuProviders.append(Provider(name: openVINO, options: try openVINOOptions(accelerator.parameters, model: model)))
            default:
                throw .invalidArgument(
                    "model '\(model)': unknown cpu_execution_accelerator '\(accelerator.name)' (Tern knows openvino; the CPU provider needs none)")
            }
        }
        // CPU accelerators apply to every instance (after the GPU ones on a GPU instance).
        let wanted: [Provider]
        switch instance.kind {
        case .gpu: wanted = gpuProviders + cpuProviders
        case .cpu: wanted = cpuProviders
        }
        let fallback = config.parameters["tern.accelerator.fallback"]?.stringValue.lowercased()
        guard fallback == nil || fallback == "cpu" || fallback == "none" else {
            throw .invalidArgument("model '\(model)': tern.accelerator.fallback must be cpu or none, not '\(fallback!)'")
        }
        var plan = ExecutionProviderPlan(providers: [], fallbacks: [])
        for provider in wanted {
            if available.contains(provider.name) {
                plan.providers.append(provider)
            } else if fallback == "cpu" {
                plan.fallbacks.append(provider.name)
            } else {
                throw .invalidArgument(
                    "model '\(model)' asks for the \(provider.name) but the ONNX Runtime library \(libraryPath) offers only "
                        + "\(available.joined(separator: ", ")); load a build that has it with --onnxruntime-library "
                        + "(pip onnxruntime-gpu for CUDA and TensorRT, onnxruntime-openvino for OpenVINO, JetPack's on a Jetson), "
                        + "or allow running on the CPU with parameters { key: \"tern.accelerator.fallback\" value: { string_value: \"cpu\" } }")
            }
        }
        return plan
    }

    /// The instance's GPU, when it has one.
    static func deviceID(_ instance: InstancePlacement) -> String? {
        if case .gpu(let device) = instance.kind { return String(device) }
        return nil
    }

    /// Triton's TensorRT accelerator parameters as ORT's TensorRT provider options.
    static func tensorRTOptions(_ parameters: [String: String], instance: InstancePlacement, model: String) throws(TernError) -> [String: String] {
        var options: [String: String] = [:]
        options["device_id"] = deviceID(instance) ?? "0"
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "precision_mode":
                switch value.uppercased() {
                case "FP32": break
                case "FP16": options["trt_fp16_enable"] = "1"
                case "INT8": options["trt_int8_enable"] = "1"
                default: throw .invalidArgument("model '\(model)': tensorrt precision_mode must be FP32, FP16 or INT8, not '\(value)'")
                }
            case "max_workspace_size_bytes": options["trt_max_workspace_size"] = try integer(value, key, model)
            case "trt_engine_cache_enable": options["trt_engine_cache_enable"] = try flag(value, key, model)
            case "trt_engine_cache_path": options["trt_engine_cache_path"] = value
            case "int8_calibration_table_name": options["trt_int8_calibration_table_name"] = value
            case "int8_use_native_calibration_table": options["trt_int8_use_native_calibration_table"] = try flag(value, key, model)
            case "trt_dla_enable": options["trt_dla_enable"] = try flag(value, key, model)
            case "trt_dla_core": options["trt_dla_core"] = try integer(value, key, model)
            case "max_partition_iterations": options["trt_max_partition_iterations"] = try integer(value, key, model)
            case "min_subgraph_size": options["trt_min_subgraph_size"] = try integer(value, key, model)
            case "trt_timing_cache_enable": options["trt_timing_cache_enable"] = try flag(value, key, model)
            case "trt_timing_cache_path": options["trt_timing_cache_path"] = value
            case "max_cached_engines": break  // Triton's own bookkeeping; ORT caches by profile
            case let ort where ort.hasPrefix("trt_"): options[ort] = value  // ORT's own name, passed on
            default:
                throw .invalidArgument("model '\(model)': unknown tensorrt parameter '\(key)'")
            }
        }
        if options["trt_dla_core"] != nil, options["trt_dla_enable"] == nil { options["trt_dla_enable"] = "1" }
        return options
    }

    /// Triton's CUDA accelerator parameters (and the instance's GPU) as ORT's CUDA provider options.
    static func cudaOptions(_ parameters: [String: String], instance: InstancePlacement, model: String) throws(TernError) -> [String: String] {
        var options: [String: String] = ["device_id": deviceID(instance) ?? "0"]
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "cudnn_conv_algo_search":
                guard ["EXHAUSTIVE", "HEURISTIC", "DEFAULT"].contains(value.uppercased()) else {
                    throw .invalidArgument("model '\(model)': cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, not '\(value)'")
                }
                options[key] = value.uppercased()
            case "arena_extend_strategy":
                switch value {
                case "0", "kNextPowerOfTwo": options[key] = "kNextPowerOfTwo"
                case "1", "kSameAsRequested": options[key] = "kSameAsRequested"
                default: throw .invalidArgument("model '\(model)': arena_extend_strategy must be kNextPowerOfTwo or kSameAsRequested, not '\(value)'")
                }
            case "gpu_mem_limit": options[key] = try integer(value, key, model)
            case "do_copy_in_default_stream", "cudnn_conv_use_max_workspace", "enable_cuda_graph", "use_tf32":
                options[key] = try flag(value, key, model)
            case "device_id": break  // the instance group decides
            default: options[key] = value  // another of ORT's CUDA options: ORT checks it when appending
            }
        }
        return options
    }

    /// The CUDA settings Triton's onnxruntime backend still reads from the model's own
    /// `parameters` (numbers as it takes them): `cudnn_conv_algo_search` 0/1/2, `gpu_mem_limit`,
    /// `arena_extend_strategy` 0/1, `do_copy_in_default_stream`.
    static func modelLevelCUDAParameters(_ config: ModelConfig) -> [String: String] {
        var parameters: [String: String] = [:]
        for key in ["cudnn_conv_algo_search", "gpu_mem_limit", "arena_extend_strategy", "do_copy_in_default_stream"] {
            guard let value = config.parameters[key]?.stringValue, !value.isEmpty else { continue }
            switch (key, value) {
            case ("cudnn_conv_algo_search", "0"): parameters[key] = "EXHAUSTIVE"
            case ("cudnn_conv_algo_search", "1"): parameters[key] = "HEURISTIC"
            case ("cudnn_conv_algo_search", "2"): parameters[key] = "DEFAULT"
            default: parameters[key] = value
            }
        }
        return parameters
    }

    /// The OpenVINO accelerator's parameters as the OpenVINO provider's options.
    static func openVINOOptions(_ parameters: [String: String], model: String) throws(TernError) -> [String: String] {
        var options: [String: String] = ["device_type": "CPU"]
        for (key, value) in parameters.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "device_type":
                let device = value.uppercased()
                guard ["CPU", "GPU", "NPU"].contains(where: { device == $0 || device.hasPrefix($0 + ".") })
                    || ["HETERO:", "AUTO:", "MULTI:"].contains(where: { device.hasPrefix($0) })
                else { throw .invalidArgument("model '\(model)': openvino device_type must be CPU, GPU or NPU (or HETERO:/AUTO:/MULTI: lists), not '\(value)'") }
                options[key] = device
            case "precision":
                guard ["FP32", "FP16", "ACCURACY"].contains(value.uppercased()) else {
                    throw .invalidArgument("model '\(model)': openvino precision must be FP32, FP16 or ACCURACY, not '\(value)'")
                }
                options[key] = value.uppercased()
            case "num_of_threads", "num_streams": options[key] = try integer(value, key, model)
            case "cache_dir": options[key] = value
            case "enable_qdq_optimizer", "disable_dynamic_shapes": options[key] = try flag(value, key, model) == "1" ? "true" : "false"
            default: throw .invalidArgument("model '\(model)': unknown openvino parameter '\(key)'")
            }
        }
        return options
    }

    private static func integer(_ value: String, _ key: String, _ model: String) throws(TernError) -> String {
        guard let number = UInt64(value) else { throw .invalidArgument("model '\(model)': \(key) must be a non-negative integer, not '\(value)'") }
        return String(number)
    }

    private static func flag(_ value: String, _ key: String, _ model: String) throws(TernError) -> String {
        switch value.lowercased() {
        case "1", "true": return "1"
        case "0", "false": return "0"
        default: throw .invalidArgument("model '\(model)': \(key) must be true or false, not '\(value)'")
        }
    }
}
