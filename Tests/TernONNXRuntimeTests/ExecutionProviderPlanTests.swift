import Testing
import TernCore
@testable import TernONNXRuntime

/// Triton's accelerator fields as execution providers, with ORT's exact option keys, worked out
/// without a GPU.
@Suite struct ExecutionProviderPlanTests {
    typealias Accelerator = Inference_ModelOptimizationPolicy.ExecutionAccelerators.Accelerator

    static let everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider"]

    static func accelerator(_ name: String, _ parameters: [String: String] = [:]) -> Accelerator {
        var accelerator = Accelerator()
        accelerator.name = name
        accelerator.parameters = parameters
        return accelerator
    }

    static func config(gpu: [Accelerator] = [], cpu: [Accelerator] = [], fallback: String? = nil) -> ModelConfig {
        var config = ModelConfig()
        config.name = "m"
        config.optimization.executionAccelerators.gpuExecutionAccelerator = gpu
        config.optimization.executionAccelerators.cpuExecutionAccelerator = cpu
        if let fallback {
            var parameter = Inference_ModelParameter()
            parameter.stringValue = fallback
            config.parameters["tern.accelerator.fallback"] = parameter
        }
        return config
    }

    static let gpu1 = InstancePlacement(kind: .gpu(deviceID: 1), index: 0, intraOpThreads: 1)
    static let cpu = InstancePlacement(kind: .cpu, index: 0, intraOpThreads: 1)

    static func plan(_ config: ModelConfig, _ instance: InstancePlacement, available: [String] = everything) throws(TernError) -> ExecutionProviderPlan {
        try ExecutionProviderPlan.make(config: config, instance: instance, available: available, libraryPath: "/lib/libonnxruntime.so")
    }

    @Test func aGPUInstanceGetsCUDAOnItsDeviceAndACPUInstanceNothing() throws {
        let plan = try Self.plan(Self.config(), Self.gpu1)
        #expect(plan.providers == [.init(name: "CUDAExecutionProvider", options: ["device_id": "1"])])
        #expect(try Self.plan(Self.config(), Self.cpu).providers.isEmpty)
    }

    @Test func tensorRTGetsTritonsKeysAsORTOptionsAheadOfCUDA() throws {
        let trt = Self.accelerator("tensorrt", [
            "precision_mode": "FP16", "max_workspace_size_bytes": "1073741824", "trt_engine_cache_enable": "true",
            "trt_engine_cache_path": "/var/cache/trt", "trt_dla_core": "1", "int8_calibration_table_name": "calibration.flatbuffers",
        ])
        let plan = try Self.plan(Self.config(gpu: [trt]), Self.gpu1)
        #expect(plan.providers.map(\.name) == ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        #expect(plan.providers[0].options == [
            "device_id": "1", "trt_fp16_enable": "1", "trt_max_workspace_size": "1073741824", "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": "/var/cache/trt", "trt_dla_core": "1", "trt_dla_enable": "1",
            "trt_int8_calibration_table_name": "calibration.flatbuffers",
        ])
        let int8 = try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt", ["precision_mode": "int8"])]), Self.gpu1)
        #expect(int8.providers[0].options["trt_int8_enable"] == "1" && int8.providers[0].options["trt_fp16_enable"] == nil)
        #expect(throws: TernError.self) { try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt", ["precision_mode": "FP64"])]), Self.gpu1) }
        #expect(throws: TernError.self) { try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt", ["turbo": "1"])]), Self.gpu1) }
    }

    @Test func cudaOptionsAreCheckedAndTheOrderOfTheConfigIsKept() throws {
        let cuda = Self.accelerator("cuda", [
            "cudnn_conv_algo_search": "heuristic", "arena_extend_strategy": "1", "gpu_mem_limit": "2147483648", "do_copy_in_default_stream": "true",
        ])
        // A `cuda` entry only sets CUDA's options: CUDA still comes after TensorRT, once.
        let plan = try Self.plan(Self.config(gpu: [cuda, Self.accelerator("tensorrt")]), Self.gpu1)
        #expect(plan.providers.map(\.name) == ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        #expect(plan.providers[1].options == [
            "device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested",
            "gpu_mem_limit": "2147483648", "do_copy_in_default_stream": "1",
        ])
        #expect(throws: TernError.self) { try Self.plan(Self.config(gpu: [Self.accelerator("cuda", ["gpu_mem_limit": "lots"])]), Self.gpu1) }
        // ORT's other CUDA options pass through (ORT checks them), as Triton does.
        let unified = try Self.plan(Self.config(gpu: [Self.accelerator("cuda", ["use_ep_level_unified_stream": "1"])]), Self.gpu1)
        #expect(unified.providers[0].options["use_ep_level_unified_stream"] == "1")
        // Triton's older model-level parameters still set CUDA's options; the accelerator's win.
        var legacy = Self.config(gpu: [Self.accelerator("cuda", ["gpu_mem_limit": "1024"])])
        for (key, value) in ["cudnn_conv_algo_search": "1", "gpu_mem_limit": "4096", "arena_extend_strategy": "1"] {
            var parameter = Inference_ModelParameter()
            parameter.stringValue = value
            legacy.parameters[key] = parameter
        }
        #expect(try Self.plan(legacy, Self.gpu1).providers[0].options == [
            "device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": "1024", "arena_extend_strategy": "kSameAsRequested",
        ])
        #expect(throws: TernError.self) { try Self.plan(Self.config(gpu: [Self.accelerator("vulkan")]), Self.cpu) }
    }

    @Test func openVINOServesCPUInstances() throws {
        let ov = Self.accelerator("openvino", ["device_type": "gpu", "precision": "fp16", "num_of_threads": "4"])
        let plan = try Self.plan(Self.config(cpu: [ov]), Self.cpu)
        #expect(plan.providers == [.init(name: "OpenVINOExecutionProvider", options: ["device_type": "GPU", "precision": "FP16", "num_of_threads": "4"])])
        #expect(try Self.plan(Self.config(cpu: [Self.accelerator("openvino")]), Self.cpu).providers[0].options == ["device_type": "CPU"])
        #expect(throws: TernError.self) { try Self.plan(Self.config(cpu: [Self.accelerator("openvino", ["device_type": "TPU"])]), Self.cpu) }
        // CPU accelerators apply to GPU instances too, after the GPU providers.
        #expect(try Self.plan(Self.config(cpu: [ov]), Self.gpu1).providers.map(\.name) == ["CUDAExecutionProvider", "OpenVINOExecutionProvider"])
    }

    @Test func aMissingProviderFailsOrFallsBackAsTheConfigSays() throws {
        let cpuOnly = ["CPUExecutionProvider"]
        do {
            _ = try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt")]), Self.gpu1, available: cpuOnly)
            Issue.record("planned a provider the library lacks")
        } catch {
            #expect(error.message.contains("TensorrtExecutionProvider") && error.message.contains("/lib/libonnxruntime.so"))
            #expect(error.message.contains("offers only CPUExecutionProvider") && error.message.contains("--onnxruntime-library"))
        }
        let fallen = try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt")], fallback: "cpu"), Self.gpu1, available: cpuOnly)
        #expect(fallen.providers.isEmpty && fallen.fallbacks == ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        // Only what is missing falls back: a CUDA library keeps CUDA.
        let partial = try Self.plan(Self.config(gpu: [Self.accelerator("tensorrt")], fallback: "cpu"), Self.gpu1,
                                    available: ["CUDAExecutionProvider", "CPUExecutionProvider"])
        #expect(partial.providers.map(\.name) == ["CUDAExecutionProvider"] && partial.fallbacks == ["TensorrtExecutionProvider"])
        #expect(throws: TernError.self) { try Self.plan(Self.config(fallback: "gpu"), Self.gpu1) }
    }
}
