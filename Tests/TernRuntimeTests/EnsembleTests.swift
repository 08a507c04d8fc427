import Foundation
import Logging
import Synchronization
import Testing
import TernCore
import TernTesting
@testable import TernRuntime

/// A backend whose models "left" and "right" each wait until the other has started: an ensemble
/// that ran its two branches one after the other would time out. Outputs are input + offset.
struct BarrierBackend: Backend {
    final class Barrier: Sendable {
        let left = DispatchSemaphore(value: 0)
        let right = DispatchSemaphore(value: 0)
    }
    let barrier = Barrier()
    var name: String { "barrier" }
    var platforms: [String] { ["barrier_test"] }
    var defaultModelFilename: String { "model.txt" }

    final class Instance: ModelInstance {
        let model: String
        let barrier: Barrier
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1, 4])], outputs: [TensorSpec(name: "Y", dataType: .fp32, shape: [-1, 4])])
        init(model: String, barrier: Barrier) {
            self.model = model
            self.barrier = barrier
        }
        func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
            let (mine, theirs) = model == "left" ? (barrier.left, barrier.right) : (barrier.right, barrier.left)
            mine.signal()
            guard theirs.wait(timeout: .now() + 5) == .success else {
                throw TernError.internalError("\(model) ran alone: the branches were not executed in parallel")
            }
            theirs.signal()  // leave the count as found for the other side
            let offset: Float = model == "left" ? 1 : 100
            let values = try inputs[0].values(as: Float.self).map { $0 + offset }
            return [Tensor(name: "Y", shape: inputs[0].shape, values: values)]
        }
    }

    func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        Instance(model: config.name, barrier: barrier)
    }
}

@Suite struct EnsembleTests {
    static let ensembleConfig = """
        name: "pair"
        platform: "ensemble"
        max_batch_size: 4
        input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "L" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "R" data_type: TYPE_FP32 dims: [ 4 ] } ]
        ensemble_scheduling { step [
          { model_name: "left" model_version: -1 input_map { key: "X" value: "IN" } output_map { key: "Y" value: "L" } },
          { model_name: "right" model_version: -1 input_map { key: "X" value: "IN" } output_map { key: "Y" value: "R" } }
        ] }
        """

    static func repository() throws -> URL {
        let root = try TestEnvironment.temporaryDirectory("ensemble")
        for model in ["left", "right"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent("\(model)/1"), withIntermediateDirectories: true)
            try "fake".write(to: root.appendingPathComponent("\(model)/1/model.txt"), atomically: true, encoding: .utf8)
            try """
                name: "\(model)"
                backend: "barrier"
                max_batch_size: 4
                input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
                output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
                """.write(to: root.appendingPathComponent("\(model)/config.pbtxt"), atomically: true, encoding: .utf8)
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("pair/1"), withIntermediateDirectories: true)
        try ensembleConfig.write(to: root.appendingPathComponent("pair/config.pbtxt"), atomically: true, encoding: .utf8)
        return root
    }

    @Test func independentBranchesRunInParallelAndOnlyEnsembleOutputsReturn() async throws {
        let root = try Self.repository()
        defer { try? FileManager.default.removeItem(at: root) }
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: root, controlMode: .explicit, startupModels: ["*"], cpuCores: 2),
            backends: [BarrierBackend()], logger: TestEnvironment.logger)
        await server.start()
        #expect(server.isModelReady("pair"))
        let response = try await server.infer(InferenceRequest(
            modelName: "pair", inputs: [Tensor(name: "IN", shape: [1, 4], values: [Float(1), 2, 3, 4])]))
        #expect(response.outputs.map(\.name).sorted() == ["L", "R"])
        #expect(try response.output(named: "L")!.values(as: Float.self) == [2, 3, 4, 5])
        #expect(try response.output(named: "R")!.values(as: Float.self) == [101, 102, 103, 104])
        // Composing models count the ensemble's calls.
        #expect(try server.statistics(model: "left").first?.inferenceCount == 1)
        #expect(try server.statistics(model: "pair").first?.inferenceCount == 1)

        // Unavailable while a composing model is not ready; back when it is.
        try server.unload(model: "right")
        #expect(!server.isModelReady("pair"))
        await #expect(throws: TernError.self) {
            _ = try await server.infer(InferenceRequest(modelName: "pair", inputs: [Tensor(name: "IN", shape: [1, 4], values: [Float(0), 0, 0, 0])]))
        }
        #expect(server.repositoryIndex().first { $0.name == "pair" }?.reason == "composing model 'right' is not ready")
        try await server.load(model: "right")
        #expect(server.isModelReady("pair"))
    }

    @Test func badGraphsAreRejectedWithTheFieldNamed() throws {
        func plan(_ steps: String, outputs: String = #"output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]"#) throws(TernError) {
            let text = """
                name: "e"
                platform: "ensemble"
                input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]
                \(outputs)
                ensemble_scheduling { step [ \(steps) ] }
                """
            _ = try EnsemblePlan(config: try ModelConfig.parse(text: text, file: "e/config.pbtxt"), file: "e/config.pbtxt")
        }
        let cycle = #expect(throws: TernError.self) {
            try plan("""
                { model_name: "a" input_map { key: "X" value: "T2" } output_map { key: "Y" value: "T1" } },
                { model_name: "b" input_map { key: "X" value: "T1" } output_map { key: "Y" value: "T2" } },
                { model_name: "c" input_map { key: "X" value: "IN" } output_map { key: "Y" value: "OUT" } }
                """)
        }
        #expect(cycle?.message.contains("cycle") == true, "\(String(describing: cycle?.message))")
        let missing = #expect(throws: TernError.self) {
            try plan(#"{ model_name: "a" input_map { key: "X" value: "NOPE" } output_map { key: "Y" value: "OUT" } }"#)
        }
        #expect(missing?.message.contains("'NOPE' is neither an ensemble input nor any step's output") == true)
        let twice = #expect(throws: TernError.self) {
            try plan("""
                { model_name: "a" input_map { key: "X" value: "IN" } output_map { key: "Y" value: "OUT" } },
                { model_name: "b" input_map { key: "X" value: "IN" } output_map { key: "Y" value: "OUT" } }
                """)
        }
        #expect(twice?.message.contains("already produced") == true)
        let unproduced = #expect(throws: TernError.self) {
            try plan(#"{ model_name: "a" input_map { key: "X" value: "IN" } output_map { key: "Y" value: "T" } }"#)
        }
        #expect(unproduced?.message.contains("output 'OUT'") == true)
        try plan(#"{ model_name: "a" model_version: 2 input_map { key: "X" value: "IN" } output_map { key: "Y" value: "OUT" } }"#)
    }
}
