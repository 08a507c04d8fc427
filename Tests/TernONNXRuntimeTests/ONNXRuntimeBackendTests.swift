import Foundation
import Testing
import TernCore
import TernTesting
@testable import TernONNXRuntime

@Suite struct ONNXRuntimeBackendTests {
    func instance(_ model: String, config: ModelConfig = ModelConfig()) throws -> any ModelInstance {
        let backend = try TestEnvironment.backend.get()
        let path = TestEnvironment.fixtures.appendingPathComponent("\(model)/1/model.onnx")
        return try backend.makeInstance(
            modelPath: path, config: config, instance: InstancePlacement(kind: .cpu, index: 0, intraOpThreads: 1),
            logger: TestEnvironment.logger)
    }

    @Test func signatureComesFromTheModelFile() throws {
        let signature = try instance("add_sub").signature
        #expect(signature.inputs == [
            TensorSpec(name: "INPUT0", dataType: .fp32, shape: [-1, 16]), TensorSpec(name: "INPUT1", dataType: .fp32, shape: [-1, 16]),
        ])
        #expect(signature.outputs.map(\.name) == ["OUTPUT0", "OUTPUT1"])
    }

    @Test func runsOnAlignedAndMisalignedInputMemory() throws {
        let model = try instance("add_sub")
        let a = (0..<32).map { Float($0) }
        let b = [Float](repeating: 0.5, count: 32)
        let aligned = Tensor(name: "INPUT0", shape: [2, 16], values: a)
        // The same floats starting one byte into a buffer: ORT needs a copy for this one.
        var shifted = Data([0])
        shifted.append(aligned.data)
        let misaligned = Tensor(name: "INPUT0", dataType: .fp32, shape: [2, 16], data: shifted.dropFirst())
        for input in [aligned, misaligned] {
            let outputs = try model.execute(
                inputs: [input, Tensor(name: "INPUT1", shape: [2, 16], values: b)], outputNames: ["OUTPUT1", "OUTPUT0"])
            #expect(outputs.map(\.name) == ["OUTPUT1", "OUTPUT0"])
            #expect(try outputs[0].values(as: Float.self) == zip(a, b).map { $0 - $1 })
            #expect(try outputs[1].values(as: Float.self) == zip(a, b).map { $0 + $1 })
            #expect(outputs[1].shape == [2, 16])
        }
    }

    @Test func stringTensorsRoundTrip() throws {
        let model = try instance("identity_bytes")
        let strings = [Data("edge".utf8), Data(), Data("é".utf8), Data("x".utf8)]
        let output = try model.execute(inputs: [Tensor(name: "INPUT0", shape: [2, 2], strings: strings)], outputNames: ["OUTPUT0"])
        #expect(output[0].dataType == .bytes && output[0].shape == [2, 2])
        #expect(try output[0].strings() == strings)
    }

    @Test func backendErrorsAreTernErrors() throws {
        let model = try instance("add_sub")
        #expect(throws: TernError.self) {
            _ = try model.execute(inputs: [Tensor(name: "INPUT0", shape: [1, 16], values: [Float](repeating: 0, count: 16))], outputNames: ["OUTPUT0"])
        }
        #expect(throws: TernError.self) {
            _ = try model.execute(inputs: [], outputNames: ["NOPE"])
        }
    }

    @Test func graphOptimizationLevelFollowsTriton() throws {
        var config = ModelConfig()
        #expect(ONNXRuntimeBackend.optimizationLevel(config) == .all)
        config.optimization.graph.level = -1
        #expect(ONNXRuntimeBackend.optimizationLevel(config) == .basic)
        config.optimization.graph.level = 1
        #expect(ONNXRuntimeBackend.optimizationLevel(config) == .extended)
        var parameter = Inference_ModelParameter()
        parameter.stringValue = "disable"
        config.parameters["tern.graph_optimization"] = parameter
        #expect(ONNXRuntimeBackend.optimizationLevel(config) == .disableAll)
    }

    static func gpuConfig(fallback: String?) -> ModelConfig {
        var config = ModelConfig()
        config.name = "add_sub"
        var accelerator = Inference_ModelOptimizationPolicy.ExecutionAccelerators.Accelerator()
        accelerator.name = "tensorrt"
        config.optimization.executionAccelerators.gpuExecutionAccelerator = [accelerator]
        if let fallback {
            var parameter = Inference_ModelParameter()
            parameter.stringValue = fallback
            config.parameters["tern.accelerator.fallback"] = parameter
        }
        return config
    }

    /// The real CPU library: a GPU instance asking for TensorRT fails to load with a message a
    /// user can act on, unless the config allows the CPU; then it runs there and says what it left out.
    @Test func aProviderTheLibraryLacksFailsTheLoadUnlessTheConfigAllowsTheCPU() throws {
        let backend = try TestEnvironment.backend.get()
        try #require(!backend.availableProviders.contains("CUDAExecutionProvider"), "this test needs a CPU-only ONNX Runtime")
        let file = TestEnvironment.fixtures.appendingPathComponent("add_sub/1/model.onnx")
        let gpu = InstancePlacement(kind: .gpu(deviceID: 0), index: 0, intraOpThreads: 1)
        do {
            _ = try backend.makeInstance(modelPath: file, config: Self.gpuConfig(fallback: nil), instance: gpu, logger: TestEnvironment.logger)
            Issue.record("a model asking for TensorRT loaded on a library without it")
        } catch let error as TernError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("TensorrtExecutionProvider") && error.message.contains(backend.libraryPath))
            #expect(error.message.contains("CPUExecutionProvider") && error.message.contains("tern.accelerator.fallback"))
        }
        let model = try backend.makeInstance(modelPath: file, config: Self.gpuConfig(fallback: "cpu"), instance: gpu, logger: TestEnvironment.logger)
        #expect(model.executionProviders == ["CPUExecutionProvider"])
        #expect(model.providerFallbacks == ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        let ones = Tensor(name: "INPUT0", shape: [1, 16], values: [Float](repeating: 1, count: 16))
        var two = ones
        two.name = "INPUT1"
        #expect(try model.execute(inputs: [ones, two], outputNames: ["OUTPUT0"])[0].values(as: Float.self) == [Float](repeating: 2, count: 16))
    }
}

@Suite struct ORTLibraryLocatorTests {
    @Test func explicitPathMustExist() {
        #expect(throws: TernError.self) { try ORTLibraryLocator(explicitPath: "/nonexistent/libonnxruntime.so", environment: [:]).locate() }
    }

    @Test func environmentVariableWins() throws {
        let found = try ORTLibraryLocator(environment: [:]).locate()
        let located = try ORTLibraryLocator(environment: [ORTLibraryLocator.environmentVariable: found]).locate()
        #expect(located == found)
    }

    @Test func theErrorNamesEveryPlaceTried() {
        let locator = ORTLibraryLocator(environment: ["HOME": "/nonexistent", "PYENV_ROOT": "/nonexistent", ORTLibraryLocator.environmentVariable: "/nope.so"])
        let directories = locator.pythonPackageDirectories()
        do {
            let path = try locator.locate()
            // A system-wide install exists on this machine; then it must be one of the candidates.
            #expect(path.contains("onnxruntime"))
        } catch {
            #expect(error.message.contains("/nope.so"))
            #expect(error.message.contains("/usr/lib"))
            for directory in directories { #expect(error.message.contains(directory)) }
        }
    }
}
