import Foundation
import Logging
import Testing
import TernCore
import TernRuntime
@testable import TernHybrid

/// What a remote model refuses at load: the schedulers and warm-up that need synchronous runs
/// (a remote model's runs are awaited, never run on a thread).
@Suite struct RemoteBackendTests {
    static func config(_ extra: String) throws -> ModelConfig {
        try ModelConfig.parse(text: """
            name: "far"
            backend: "remote"
            max_batch_size: 4
            input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
            output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
            parameters { key: "tern.remote.url" value: { string_value: "grpc://127.0.0.1:1" } }
            \(extra)
            """)
    }

    static func loadError(_ config: ModelConfig) async -> String? {
        do {
            _ = try await RemoteBackend().loadInstance(
                modelPath: URL(fileURLWithPath: "/tmp/far/1/model"), config: config,
                instance: InstancePlacement(kind: .cpu, index: 0, intraOpThreads: 0), logger: Logger(label: "test"))
            return nil
        } catch {
            return (error as? TernError)?.message ?? "\(error)"
        }
    }

    @Test func sequenceBatchingAndWarmUpAreRefusedWithAReason() async throws {
        let sequence = await Self.loadError(try Self.config("sequence_batching { max_sequence_idle_microseconds: 1000 }"))
        #expect(sequence?.contains("cannot use sequence_batching") == true, "\(String(describing: sequence))")
        let warmup = await Self.loadError(try Self.config(
            #"model_warmup [ { name: "w" batch_size: 1 inputs { key: "X" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]"#))
        #expect(warmup?.contains("cannot have model_warmup") == true, "\(String(describing: warmup))")
        // With inputs and outputs in the config nothing is fetched at load: the instance is made
        // without a connection (it connects once the connection service runs).
        #expect(await Self.loadError(try Self.config("")) == nil)
    }
}
