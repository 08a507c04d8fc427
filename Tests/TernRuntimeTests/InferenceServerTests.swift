import Foundation
import Synchronization
import Testing
import TernCore
import TernTesting
@testable import TernRuntime

/// The engine through its in-process API, on real ONNX Runtime sessions.
@Suite struct InferenceServerTests {
    static let addSubConfig = """
        name: "add_sub"
        backend: "onnxruntime"
        max_batch_size: 8
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        """

    func addSubRequest(batch: Int = 1, _ a: Float = 1, _ b: Float = 2) -> InferenceRequest {
        InferenceRequest(
            modelName: "add_sub", id: "r1",
            inputs: [
                Tensor(name: "INPUT0", shape: [Int64(batch), 16], values: [Float](repeating: a, count: 16 * batch)),
                Tensor(name: "INPUT1", shape: [Int64(batch), 16], values: [Float](repeating: b, count: 16 * batch)),
            ])
    }

    func server(models: [String] = ["add_sub"], mode: ServerConfiguration.ModelControlMode = .none, startup: [String] = []) async throws -> (InferenceServer, URL) {
        let repo = try TestEnvironment.repository(with: models)
        if models.contains("add_sub") { try TestEnvironment.writeConfig(Self.addSubConfig, model: "add_sub", in: repo) }
        return (try await TestEnvironment.startedServer(repository: repo, mode: mode, startupModels: startup), repo)
    }

    @Test func infersInProcess() async throws {
        let (server, _) = try await server()
        #expect(server.isReady && server.isModelReady("add_sub") && server.isModelReady("add_sub", version: 1))
        let response = try await server.infer(addSubRequest(batch: 3))
        #expect(response.id == "r1" && response.modelVersion == 1)
        #expect(try response.output(named: "OUTPUT0")?.values(as: Float.self) == [Float](repeating: 3, count: 48))
        #expect(try response.output(named: "OUTPUT1")?.values(as: Float.self) == [Float](repeating: -1, count: 48))
    }

    @Test func errorsCarryTritonCodes() async throws {
        let (server, _) = try await server()
        func code(_ request: InferenceRequest) async -> TernError.Code? {
            do { _ = try await server.infer(request); return nil } catch { return error.code }
        }
        var unknown = addSubRequest()
        unknown.modelName = "nope"
        #expect(await code(unknown) == .notFound)
        var version = addSubRequest()
        version.modelVersion = 9
        #expect(await code(version) == .notFound)
        #expect(await code(addSubRequest(batch: 9)) == .invalidArgument)
        var missing = addSubRequest()
        missing.inputs.removeLast()
        #expect(await code(missing) == .invalidArgument)
        var wrongType = addSubRequest()
        wrongType.inputs[0] = Tensor(name: "INPUT0", shape: [1, 16], values: [Double](repeating: 0, count: 16))
        #expect(await code(wrongType) == .invalidArgument)
        var short = addSubRequest()
        short.inputs[0].data = short.inputs[0].data.prefix(10)
        #expect(await code(short) == .invalidArgument)
        var output = addSubRequest()
        output.outputs = [RequestedOutput(name: "NOPE")]
        #expect(await code(output) == .invalidArgument)
        #expect(!server.isModelReady("nope"))
    }

    @Test func statisticsCountRowsExecutionsAndFailures() async throws {
        let (server, _) = try await server()
        _ = try await server.infer(addSubRequest(batch: 2))
        _ = try await server.infer(addSubRequest(batch: 2))
        _ = try await server.infer(addSubRequest(batch: 1))
        _ = try? await server.infer(addSubRequest(batch: 9))
        let stats = try #require(try server.statistics(model: "add_sub").first)
        #expect(stats.inferenceCount == 5 && stats.executionCount == 3)
        #expect(stats.success.count == 3 && stats.fail.count == 1)
        #expect(stats.computeInfer.count == 3 && stats.computeInfer.ns > 0)
        #expect(stats.batchStats.map(\.batchSize) == [1, 2])
        #expect(stats.batchStats.map(\.computeInfer.count) == [1, 2])
        #expect(stats.lastInference > 0)
    }

    @Test func concurrentRequestsEachGetTheirOwnAnswer() async throws {
        let (server, _) = try await server()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<64 {
                group.addTask {
                    let response = try await server.infer(addSubRequest(Float(i), 1))
                    return try response.output(named: "OUTPUT0")!.values(as: Float.self) == [Float](repeating: Float(i) + 1, count: 16)
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }

    @Test func aBrokenModelDoesNotStopTheOthers() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub", "identity_int32"])
        try TestEnvironment.writeConfig("name: \"add_sub\"\nmax_batch_size: 8\ninput [ { name: \"NOPE\" data_type: TYPE_FP32 dims: [ 16 ] } ]\n", model: "add_sub", in: repo)
        let server = try await TestEnvironment.startedServer(repository: repo)
        #expect(server.isModelReady("identity_int32"))
        #expect(!server.isModelReady("add_sub"))
        let entry = try #require(server.repositoryIndex().first { $0.name == "add_sub" })
        #expect(entry.state == "UNAVAILABLE" && entry.reason.contains("config.pbtxt") && entry.reason.contains("NOPE"))
    }

    @Test func explicitModeLoadsAndUnloads() async throws {
        let (server, _) = try await server(models: ["add_sub", "identity_fp32"], mode: .explicit, startup: ["add_sub"])
        #expect(!server.isModelReady("identity_fp32"))
        try await server.load(model: "identity_fp32")
        #expect(server.isModelReady("identity_fp32"))
        try server.unload(model: "identity_fp32")
        #expect(!server.isModelReady("identity_fp32"))
        await #expect(throws: TernError.self) { try await server.load(model: "missing") }
        for escape in ["..", "../add_sub", "a/b", ""] {
            do {
                try await server.load(model: escape)
                Issue.record("loaded '\(escape)'")
            } catch {
                #expect(error.code == .invalidArgument, "\(escape): \(error.message)")
            }
        }
        try await server.load(model: "add_sub", configJSON: #"{"name":"add_sub","backend":"onnxruntime","max_batch_size":2}"#)
        #expect(try server.modelConfig("add_sub").maxBatchSize == 2)
        await #expect(throws: TernError.self) { try await server.infer(addSubRequest(batch: 3)) }
    }

    /// A repository with the `slow` fixture and ~50 ms warm-up runs: each load takes about a second.
    static func slowRepository() throws -> URL {
        let repo = try TestEnvironment.repository(with: ["slow"])
        try TestEnvironment.writeConfig(
            """
            name: "slow"
            backend: "onnxruntime"
            max_batch_size: 1
            input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
            output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
            model_warmup [ { name: "w" batch_size: 1 count: 20 inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
            """, model: "slow", in: repo)
        return repo
    }

    /// Waits (up to 30 s) until the model's lifecycle is in `phase`.
    static func waitFor(_ phase: ModelLifecycle<LoadedModel>.Phase, of model: String, on server: InferenceServer) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while server.registry.withLock({ $0.lifecycles[model]?.phase }) != phase, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(server.registry.withLock({ $0.lifecycles[model]?.phase }) == phase)
    }

    static func reload(_ model: String, on server: InferenceServer) async -> TernError? {
        do throws(TernError) {
            try await server.load(model: model)
            return nil
        } catch {
            return error
        }
    }

    /// The engine's side of the lifecycle turns: fifteen reloads asked while one runs all succeed
    /// and share one more load; the model answers throughout.
    @Test func aReloadStormDuringALoadCostsOneMoreLoad() async throws {
        let history = InMemoryLifecycleHistory()
        let repo = try Self.slowRepository()
        defer { try? FileManager.default.removeItem(at: repo) }
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: repo, controlMode: .explicit, startupModels: ["slow"], cpuCores: 2),
            backends: [try TestEnvironment.backend.get()], history: history, logger: TestEnvironment.logger)
        await server.start()
        let first = Task { await Self.reload("slow", on: server) }
        try await Self.waitFor(.swapping, of: "slow", on: server)
        let errors = await withTaskGroup(of: TernError?.self) { group in
            for _ in 0..<15 { group.addTask { await Self.reload("slow", on: server) } }
            var errors: [TernError] = []
            for await error in group { if let error { errors.append(error) } }
            return errors
        }
        #expect(await first.value == nil)
        #expect(errors.isEmpty, "\(errors.map(\.message))")
        let actions = history.events(model: "slow", limit: 100).map(\.action)
        #expect(actions == ["load", "swap", "swap"], "\(actions)")
        #expect(server.isModelReady("slow"))
    }

    /// An unload while a reload is still running: the reload is abandoned (it never serves) and
    /// the model stays unloaded.
    @Test func anUnloadDuringAReloadWins() async throws {
        let repo = try Self.slowRepository()
        defer { try? FileManager.default.removeItem(at: repo) }
        let server = try await TestEnvironment.startedServer(repository: repo, mode: .explicit, startupModels: ["slow"])
        #expect(server.isModelReady("slow"))
        let reload = Task { await Self.reload("slow", on: server) }
        try await Self.waitFor(.swapping, of: "slow", on: server)
        try server.unload(model: "slow")
        let error = await reload.value
        #expect(error?.code == .unavailable, "\(String(describing: error))")
        #expect(!server.isModelReady("slow"))
        #expect(try server.lifecycleStatus(model: "slow").phase == "unavailable")
    }

    @Test func pollModePicksUpNewAndRemovedModels() async throws {
        let (server, repo) = try await server(models: ["add_sub"], mode: .poll)
        #expect(!server.isModelReady("identity_int8"))
        try FileManager.default.copyItem(
            at: TestEnvironment.fixtures.appendingPathComponent("identity_int8"), to: repo.appendingPathComponent("identity_int8"))
        await server.pollOnce()
        #expect(server.isModelReady("identity_int8"))
        try FileManager.default.removeItem(at: repo.appendingPathComponent("identity_int8"))
        await server.pollOnce()
        #expect(!server.isModelReady("identity_int8"))
        #expect(server.isModelReady("add_sub"))
    }

    @Test func autoCompleteCanBeTurnedOff() async throws {
        let repo = try TestEnvironment.repository(with: ["identity_int16"])  // fixtures have no config.pbtxt
        let strict = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: repo, autoCompleteConfig: false, cpuCores: 2),
            backends: [try TestEnvironment.backend.get()], logger: TestEnvironment.logger)
        await strict.start()
        #expect(!strict.isModelReady("identity_int16"))
        let entry = try #require(strict.repositoryIndex().first)
        #expect(entry.state == "UNAVAILABLE" && entry.reason.contains("auto-complete is disabled"))
        let completing = try await TestEnvironment.startedServer(repository: repo)
        #expect(completing.isModelReady("identity_int16"))
        #expect(try completing.modelConfig("identity_int16").maxBatchSize == ModelConfig.defaultMaxBatchSize)
    }

    @Test func versionPolicySelectsVersions() {
        var policy = Inference_ModelVersionPolicy()
        #expect(ModelRepository.selectVersions([1, 2, 5], policy: policy) == [5])
        policy.latest.numVersions = 2
        #expect(ModelRepository.selectVersions([1, 2, 5], policy: policy) == [2, 5])
        policy.all = .init()
        #expect(ModelRepository.selectVersions([1, 2, 5], policy: policy) == [1, 2, 5])
        policy.specific.versions = [1]
        #expect(ModelRepository.selectVersions([1, 2, 5], policy: policy) == [1])
    }

    @Test func threadBudgetSplitsCoresOverInstances() throws {
        let two = try ModelConfig.parse(text: "name: \"m\" instance_group [ { count: 2 kind: KIND_CPU } ]")
        #expect(ModelLoader.placements(for: two, cpuCores: 2).map(\.intraOpThreads) == [1, 1])
        let one = try ModelConfig.parse(text: "name: \"m\"")
        #expect(ModelLoader.placements(for: one, cpuCores: 4).map(\.intraOpThreads) == [4])
        let many = try ModelConfig.parse(text: "name: \"m\" instance_group [ { count: 3 kind: KIND_CPU }, { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]")
        let placements = ModelLoader.placements(for: many, cpuCores: 2)
        #expect(placements.count == 4 && placements.allSatisfy { $0.intraOpThreads == 1 })
        #expect(placements.last?.kind == .gpu(deviceID: 0))
        // As Triton: `count` instances on each GPU the group lists.
        let spread = try ModelConfig.parse(text: "name: \"m\" instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]")
        #expect(ModelLoader.placements(for: spread, cpuCores: 2).map(\.kind) == [.gpu(deviceID: 0), .gpu(deviceID: 0), .gpu(deviceID: 1), .gpu(deviceID: 1)])
    }
}
