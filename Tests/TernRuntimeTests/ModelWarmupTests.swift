import Foundation
import Testing
import TernCore
import TernTesting
@testable import TernRuntime

/// `model_warmup` on real ONNX Runtime sessions: samples run before the version is ready, a failing
/// sample fails the load with its name, and warm-up does not count in the statistics.
@Suite struct ModelWarmupTests {
    static func config(_ warmup: String) -> String {
        InferenceServerTests.addSubConfig + "\n" + warmup
    }

    @Test func samplesRunBeforeReadyWithoutCountingInStatistics() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        let folder = repo.appendingPathComponent("add_sub/warmup")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try [Float](repeating: 0.5, count: 32).withUnsafeBytes { Data($0) }.write(to: folder.appendingPathComponent("half.bin"))
        try TestEnvironment.writeConfig(Self.config("""
            model_warmup [
              { name: "zeros" batch_size: 1 count: 3
                inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } }
                inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } },
              { name: "random" batch_size: 4
                inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 16 ] random_data: true } }
                inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 16 ] random_data: true } } },
              { name: "file" batch_size: 2
                inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 16 ] input_data_file: "half.bin" } }
                inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 16 ] input_data_file: "half.bin" } } }
            ]
            """), model: "add_sub", in: repo)
        let server = try await TestEnvironment.startedServer(repository: repo)
        #expect(server.isModelReady("add_sub"))
        let stats = try server.statistics(model: "add_sub")[0]
        #expect(stats.executionCount == 0 && stats.inferenceCount == 0)

        // The samples' inputs, as the backend receives them.
        let config = try server.modelConfig("add_sub")
        let file = try ModelWarmup.inputs(of: config.modelWarmup[2], config: config, directory: repo.appendingPathComponent("add_sub"))
        #expect(file.map(\.shape) == [[2, 16], [2, 16]])
        #expect(try file[0].values(as: Float.self) == [Float](repeating: 0.5, count: 32))
        let random = try ModelWarmup.inputs(of: config.modelWarmup[1], config: config, directory: repo)
        #expect(try random[0].values(as: Float.self).allSatisfy { $0 >= 0 && $0 < 1 } && random[0].shape == [4, 16])
    }

    @Test func aFailingSampleFailsTheLoadAndSaysWhich() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        let folder = repo.appendingPathComponent("add_sub/warmup")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(count: 10).write(to: folder.appendingPathComponent("short.bin"))
        try TestEnvironment.writeConfig(Self.config("""
            model_warmup [ { name: "short file" batch_size: 1
              inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 16 ] input_data_file: "short.bin" } }
              inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } } ]
            """), model: "add_sub", in: repo)
        let server = try await TestEnvironment.startedServer(repository: repo)
        #expect(!server.isModelReady("add_sub"))
        let entry = try #require(server.repositoryIndex().first { $0.name == "add_sub" })
        #expect(entry.state == "UNAVAILABLE" && entry.reason.contains("model_warmup 'short file'") && entry.reason.contains("needs 64"))

        // A sample the model rejects (a missing input) fails the load too.
        try TestEnvironment.writeConfig(Self.config("""
            model_warmup [ { name: "half" batch_size: 1
              inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } } ]
            """), model: "add_sub", in: repo)
        let again = try await TestEnvironment.startedServer(repository: repo)
        let reason = try #require(again.repositoryIndex().first { $0.name == "add_sub" }).reason
        #expect(reason.contains("model_warmup 'half' failed"))
    }
}
