import Foundation
import Logging
import Synchronization
import Testing
import TernCore
import TernTesting
@testable import TernRuntime

/// A fast backend whose instances either allow running on the caller's thread or (like remote
/// models, which wait on SwiftNIO futures) do not; each execution records whether it ran on the
/// thread that asked.
struct ThreadProbeBackend: Backend {
    final class Log: Sendable {
        let onCaller = Mutex<[Bool]>([])
        let asker = Mutex<pthread_t?>(nil)
    }
    let log = Log()
    var name: String { "probe" }
    var platforms: [String] { ["probe_test"] }
    var defaultModelFilename: String { "model.txt" }

    final class Instance: ModelInstance {
        let inline: Bool
        let backend: ThreadProbeBackend
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1, 1])], outputs: [TensorSpec(name: "Y", dataType: .fp32, shape: [-1, 1])])
        init(inline: Bool, backend: ThreadProbeBackend) {
            self.inline = inline
            self.backend = backend
        }
        var mayRunOnCallerThread: Bool { inline }
        func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
            let caller = backend.log.asker.withLock { $0 }
            backend.log.onCaller.withLock { $0.append(caller.map { pthread_equal($0, pthread_self()) != 0 } ?? false) }
            return [Tensor(name: "Y", dataType: .fp32, shape: inputs[0].shape, data: inputs[0].data)]
        }
    }

    func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        Instance(inline: config.name == "local", backend: self)
    }
}

@Suite struct CallerThreadTests {
    @Test func instancesThatWaitOnIONeverRunOnTheCallersThread() async throws {
        let root = try TestEnvironment.temporaryDirectory("probe")
        defer { try? FileManager.default.removeItem(at: root) }
        for model in ["local", "io"] {
            try FileManager.default.createDirectory(at: root.appendingPathComponent("\(model)/1"), withIntermediateDirectories: true)
            try "fake".write(to: root.appendingPathComponent("\(model)/1/model.txt"), atomically: true, encoding: .utf8)
            try """
                name: "\(model)"
                backend: "probe"
                max_batch_size: 4
                input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
                output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
                """.write(to: root.appendingPathComponent("\(model)/config.pbtxt"), atomically: true, encoding: .utf8)
        }
        let backend = ThreadProbeBackend()
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: root, controlMode: .explicit, startupModels: ["*"], cpuCores: 2),
            backends: [backend], logger: TestEnvironment.logger)
        await server.start()
        for model in ["local", "io"] {
            backend.log.onCaller.withLock { $0.removeAll() }
            var immediate = 0
            for _ in 0..<50 {  // the scheduler learns that the model is fast, then may run it inline
                backend.log.asker.withLock { $0 = pthread_self() }
                let request = InferenceRequest(modelName: model, inputs: [Tensor(name: "X", shape: [1, 1], values: [Float(1)])])
                // Answer.run tells whether `submit` answered before it returned (an inline run).
                let (later, answered) = AsyncStream.makeStream(of: Result<InferenceResponse, TernError>.self)
                if let early = Answer<Result<InferenceResponse, TernError>>.run({ done in
                    server.submit(request, allowInline: true, completion: done)
                }, later: { answered.yield($0) }) {
                    immediate += 1
                    _ = try early.get()
                } else {
                    var waiting = later.makeAsyncIterator()
                    _ = try await waiting.next()?.get()
                }
            }
            let onCaller = backend.log.onCaller.withLock { $0 }
            if model == "local" {
                #expect(immediate > 0 && onCaller.contains(true))
            } else {
                // An I/O model's run may still end before `submit` returns (on its instance's
                // thread, racing the caller): what matters is that it never ran on the caller's.
                #expect(!onCaller.contains(true))
            }
        }
    }
}
