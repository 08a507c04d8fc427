import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import TernCore

/// Tern's engine: serves the models of a repository. Frontends (HTTP, gRPC) call it, and an app
/// can embed it and call `infer` directly, with no serialization and no socket.
///
/// ```swift
/// let server = InferenceServer(configuration: .init(repositoryPath: url), backends: [ort], logger: logger)
/// await server.start()
/// let response = try await server.infer(InferenceRequest(modelName: "add_sub", inputs: [...]))
/// ```
public final class InferenceServer: Sendable {
    public let configuration: ServerConfiguration
    public let logger: Logger
    let loader: ModelLoader
    let repository: ModelRepository
    /// Each model's lifecycle (see `ModelLifecycle`) and the callers waiting for a turn.
    let registry = Mutex(Models())
    /// Held while decisions are written, so writes of one model never overtake each other.
    let decisionWriter = Mutex(())
    private let started = Mutex(false)
    let ledger: MemoryLedger
    /// Where lifecycle events (loads, swaps, rejected swaps, rollbacks) are written.
    public let history: any LifecycleHistory
    /// Load shaping set by a device policy: batch scale and paused models (name → why).
    let shaping = Mutex(Shaping())
    private let anyPaused = Atomic(false)
    /// Names answered by code (experiments), checked before the repository's models.
    let virtuals = Mutex<[String: any VirtualModel]>([:])
    private let anyVirtual = Atomic(false)
    /// Regions of system shared memory registered by clients on this machine (both frontends).
    public let sharedMemory: SharedMemoryRegistry
    /// Shared with every loaded model: the way back to the engine and the count of requests in progress.
    let link: EngineLink

    struct Shaping {
        var batchScale = 1.0
        var paused: [String: String] = [:]
    }

    public init(configuration: ServerConfiguration, backends: [any Backend], history: any LifecycleHistory = InMemoryLifecycleHistory(), logger: Logger) {
        self.configuration = configuration
        self.history = history
        self.logger = logger
        self.repository = ModelRepository(root: configuration.repositoryPath)
        self.ledger = MemoryLedger(policy: configuration.memory)
        self.sharedMemory = SharedMemoryRegistry(allowsRegistration: configuration.allowClientSharedMemory)
        let link = EngineLink()
        self.link = link
        self.loader = ModelLoader(
            repository: repository, backends: backends + [EnsembleBackend(link: link)], autoComplete: configuration.autoCompleteConfig,
            cpuCores: configuration.cpuCores, maxInstances: configuration.maxInstancesPerModel,
            rateLimiter: configuration.rateLimit ? RateLimiter(resources: configuration.rateLimitResources) : nil, logger: logger,
            link: link)
        link.server = self
        let restored = history.savedDecisions()
        registry.withLock { $0.restored = restored }
    }

    // MARK: Lifecycle

    /// Loads the models the control mode says to load at start. A model that fails to load is
    /// marked unavailable with its reason; it never stops the others.
    public func start() async {
        let names: [String]
        switch configuration.controlMode {
        case .none, .poll: names = repository.modelNames()
        case .explicit:
            names = configuration.startupModels.contains("*") ? repository.modelNames() : configuration.startupModels
        }
        await withTaskGroup(of: Void.self) { group in
            for name in names {
                group.addTask { _ = try? await self.loadModel(name, configOverride: nil) }
            }
        }
        started.withLock { $0 = true }
        Self.returnFreedMemory()
    }

    /// Hands memory freed while loading (model file buffers, graph copies) back to the OS, so the
    /// idle footprint is what the sessions hold rather than the peak of loading.
    static func returnFreedMemory() {
        #if canImport(Glibc)
        // malloc_trim is glibc's (malloc.h, which the Glibc module does not export).
        typealias MallocTrim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        }
        #endif
    }

    /// In poll mode, rescans the repository every `pollInterval` until cancelled: new and changed
    /// models are (re)loaded, removed ones unloaded. A changed model keeps serving its old version
    /// until the new one is ready.
    public func runRepositoryPolling() async {
        guard configuration.controlMode == .poll else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.pollInterval)
            await pollOnce()
        }
    }

    /// One poll-mode scan of the repository.
    public func pollOnce() async {
        let present = Set(repository.modelNames())
        let known = registry.withLock { models in models.lifecycles.filter { $0.value.phase != .absent }.mapValues(\.fingerprint) }
        for name in known.keys where !present.contains(name) {
            _ = remove(name, reason: "removed from the repository (poll mode)", action: "unload", forget: true)
        }
        for name in present.sorted() where known[name] != repository.fingerprint(of: name) {
            _ = try? await loadModel(name, configOverride: nil)
        }
    }

    /// Requests in progress in the models (queued or running), over every frontend and the Swift API.
    public var requestsInFlight: Int { link.requestsInFlight }

    /// Waits until no request is in progress, for at most `timeout`; returns how many still were.
    /// A drained shutdown calls it after the frontends have stopped taking requests, so that no
    /// model run is left racing the process's exit.
    public func drain(timeout: Duration) async -> Int {
        let deadline = ContinuousClock.now + timeout
        while link.requestsInFlight > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return link.requestsInFlight
    }

    // MARK: Health and metadata

    public var isLive: Bool { true }

    /// Ready once start-up loading has finished and no model is loading. Unlike Triton, a model
    /// that failed to load does not make the server unready: the others keep serving, and the
    /// failure is reported per model (model ready, repository index).
    public var isReady: Bool {
        guard started.withLock({ $0 }) else { return false }
        return registry.withLock { models in !models.lifecycles.values.contains { $0.isFirstLoading } }
    }

    public var serverMetadata: ServerMetadata {
        ServerMetadata(
            name: configuration.serverName, version: configuration.serverVersion,
            extensions: ServerMetadata.supportedExtensions)
    }

    /// Whether the model (and version, if given) is loaded and ready. Unknown models are not ready.
    public func isModelReady(_ name: String, version: Int64? = nil) -> Bool {
        if let virtual = virtualModel(name) { return isModelReady(virtual.presented.model, version: virtual.presented.version) }
        guard let runner = try? runner(name, version: version) else { return false }
        return unreadyComposingModel(of: runner.config) == nil
    }

    /// For an ensemble, a composing model (or nested ensemble's) that is not ready; nil otherwise.
    func unreadyComposingModel(of config: ModelConfig, depth: Int = 0) -> String? {
        guard config.platform == "ensemble", case .ensembleScheduling(let ensemble)? = config.schedulingChoice, depth < 8 else { return nil }
        for step in ensemble.step {
            let version = step.modelVersion > 0 ? step.modelVersion : nil
            guard let runner = try? runner(step.modelName, version: version) else { return step.modelName }
            if let nested = unreadyComposingModel(of: runner.config, depth: depth + 1) { return nested }
        }
        return nil
    }

    public func modelMetadata(_ name: String, version: Int64? = nil) throws(TernError) -> ModelMetadata {
        if let virtual = virtualModel(name) {
            var metadata = try modelMetadata(virtual.presented.model, version: virtual.presented.version)
            metadata.name = name
            return metadata
        }
        let runner = try runner(name, version: version)
        let versions = version.map { [String($0)] } ?? readyVersions(name).map(String.init)
        let config = runner.config
        let batch: [Int64] = config.maxBatchSize > 0 ? [-1] : []
        return ModelMetadata(
            name: name, versions: versions, platform: config.platform.isEmpty ? config.backend : config.platform,
            inputs: config.input.map { TensorSpec(name: $0.name, dataType: DataType(configType: $0.dataType)!, shape: batch + $0.dims) },
            outputs: config.output.map { TensorSpec(name: $0.name, dataType: DataType(configType: $0.dataType)!, shape: batch + $0.dims) })
    }

    /// The complete configuration the model runs with (after auto-complete).
    public func modelConfig(_ name: String, version: Int64? = nil) throws(TernError) -> ModelConfig {
        if let virtual = virtualModel(name) {
            var config = try runner(virtual.presented.model, version: virtual.presented.version).config
            config.name = name
            return config
        }
        return try runner(name, version: version).config
    }

    // MARK: Virtual models

    /// Makes `virtual` answer its name. A name of the repository cannot be taken; registering a
    /// name again replaces the earlier one.
    public func register(virtual: any VirtualModel) throws(TernError) {
        if registry.withLock({ $0.lifecycles[virtual.name].map { $0.phase != .absent } ?? false }) || repository.modelNames().contains(virtual.name) {
            throw TernError(.alreadyExists, "'\(virtual.name)' is a model of the repository; an experiment needs a name of its own")
        }
        virtuals.withLock { virtuals in
            virtuals[virtual.name] = virtual
            anyVirtual.store(true, ordering: .relaxed)
        }
    }

    public func unregister(virtual name: String) {
        virtuals.withLock { virtuals in
            virtuals[name] = nil
            anyVirtual.store(!virtuals.isEmpty, ordering: .relaxed)
        }
    }

    /// The virtual model of that name, if any (one relaxed load when there are none).
    func virtualModel(_ name: String) -> (any VirtualModel)? {
        guard anyVirtual.load(ordering: .relaxed) else { return nil }
        return virtuals.withLock { $0[name] }
    }

    // MARK: Inference

    /// Runs one request on the requested (or highest ready) version of a model.
    public func infer(_ request: InferenceRequest) async throws(TernError) -> InferenceResponse {
        if let virtual = virtualModel(request.modelName) {
            let result: Result<InferenceResponse, TernError> = await withCheckedContinuation { continuation in
                virtual.handle(request, engine: self) { continuation.resume(returning: $0) }
            }
            return try result.get()
        }
        let runner = try servingRunner(request)
        return try await runner.infer(request)
    }

    /// Runs the request and calls `completion` once with its outcome, on the thread that finishes
    /// it (possibly this one, before `submit` returns, unless `allowInline` is false: a fast model
    /// with a free instance runs on the caller's thread). For callers that are not async, such as
    /// event-loop frontends: no task is created on the way, and `Answer.run` tells an inline
    /// answer from a later one. This is the one request path; `infer` awaits it.
    public func submit(
        _ request: InferenceRequest, allowInline: Bool = true,
        completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) {
        if let virtual = virtualModel(request.modelName) {
            return virtual.handle(request, engine: self, completion: completion)
        }
        submit(toModel: request, allowInline: allowInline, completion: completion)
    }

    /// As `submit`, on a model of the repository (no virtual model answers): how a virtual model
    /// forwards a request it has routed, without looking its target up among the virtual ones.
    public func submit(
        toModel request: InferenceRequest, allowInline: Bool = true,
        completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) {
        do throws(TernError) {
            try servingRunner(request).submit(request, allowInline: allowInline, completion: completion)
        } catch {
            completion(.failure(error))
        }
    }

    /// The runner for a request, unless a device policy has paused the model.
    private func servingRunner(_ request: InferenceRequest) throws(TernError) -> ModelVersionRunner {
        if anyPaused.load(ordering: .relaxed), let reason = shaping.withLock({ $0.paused[request.modelName] }) {
            throw .unavailable("model '\(request.modelName)' is paused: \(reason)")
        }
        return try runner(request.modelName, version: request.modelVersion)
    }

    // MARK: Load shaping

    /// Scales every dynamic batcher's `max_batch_size` by `scale` in (0, 1]; 1 restores the
    /// configured sizes. Applies to models loaded later too. A device policy calls it to shed
    /// heat: smaller batches, shorter bursts of work.
    public func setBatchScale(_ scale: Double) {
        let clamped = min(max(scale, 0.0001), 1)
        shaping.withLock { $0.batchScale = clamped }
        // The warm set too: a rollback puts it back in service.
        let runners = registry.withLock { models in
            models.lifecycles.values.flatMap { lifecycle in [lifecycle.served, lifecycle.warm].compactMap { $0 }.flatMap { $0.runners.values } }
        }
        for runner in runners { runner.scaleBatches(clamped) }
    }

    public var batchScale: Double { shaping.withLock { $0.batchScale } }

    /// Pauses models: their requests are refused with UNAVAILABLE (503) and `reason` until
    /// `resume`. The models stay loaded, so resuming is instant.
    public func pause(models: [String], reason: String) {
        shaping.withLock { shaping in
            for model in models { shaping.paused[model] = reason }
            anyPaused.store(!shaping.paused.isEmpty, ordering: .relaxed)
        }
        logger.warning("models paused", metadata: ["models": .string(models.joined(separator: ",")), "reason": .string(reason)])
    }

    public func resume(models: [String]) {
        shaping.withLock { shaping in
            for model in models { shaping.paused[model] = nil }
            anyPaused.store(!shaping.paused.isEmpty, ordering: .relaxed)
        }
        logger.info("models resumed", metadata: ["models": .string(models.joined(separator: ","))])
    }

    /// Paused models and why.
    public var pausedModels: [String: String] { shaping.withLock { $0.paused } }


    /// Where each instance of a model with this config runs and with how many ONNX Runtime
    /// threads (the engine's thread budget: cores split evenly over the instances).
    public static func placements(for config: ModelConfig, cpuCores: Int) -> [InstancePlacement] {
        ModelLoader.placements(for: config, cpuCores: cpuCores)
    }

    // MARK: Statistics

    /// Statistics of every ready version (name nil), of one model, or of one version.
    public func statistics(model name: String? = nil, version: Int64? = nil) throws(TernError) -> [ModelStatistics] {
        if let name {
            if let version { return [try runner(name, version: version).statistics.snapshot] }
            let runners = registry.withLock { $0.lifecycles[name]?.served?.runners }
            guard let runners, !runners.isEmpty else { throw Self.unknownModel(name) }
            return runners.keys.sorted().map { runners[$0]!.statistics.snapshot }
        }
        let all = registry.withLock { models in models.lifecycles.values.compactMap(\.served) }
        return all.sorted { $0.name < $1.name }.flatMap { model in
            model.runners.keys.sorted().map { model.runners[$0]!.statistics.snapshot }
        }
    }

    /// How busy the serving (or given) version of a model is; nil when it does not queue through
    /// a dynamic batcher (sequence batching, ensembles, routing models).
    public func occupancy(model name: String, version: Int64? = nil) throws(TernError) -> ModelOccupancy? {
        try runner(name, version: version).occupancy
    }

    // MARK: Repository

    /// Every model of the repository with the state of each version; `readyOnly` keeps the ready ones.
    public func repositoryIndex(readyOnly: Bool = false) -> [ModelIndexEntry] {
        let lifecycles = registry.withLock { models in models.lifecycles.filter { $0.value.phase != .absent } }
        var entries: [ModelIndexEntry] = []
        for name in Set(repository.modelNames()).union(lifecycles.keys).sorted() {
            guard let lifecycle = lifecycles[name] else {
                if !readyOnly { entries.append(ModelIndexEntry(name: name, version: "", state: "", reason: "")) }
                continue
            }
            if let loaded = lifecycle.served {
                let missing = unreadyComposingModel(of: loaded.config)
                for version in Set(loaded.runners.keys).union(loaded.failures.keys).sorted() {
                    let failure = loaded.failures[version] ?? missing.map { "composing model '\($0)' is not ready" }
                    let state = failure == nil ? "READY" : "UNAVAILABLE"
                    if readyOnly && state != "READY" { continue }
                    entries.append(ModelIndexEntry(name: name, version: String(version), state: state, reason: failure ?? ""))
                }
            } else if !readyOnly {
                entries.append(ModelIndexEntry(name: name, version: "", state: Self.readiness(lifecycle.phase), reason: lifecycle.reason))
            }
        }
        return entries
    }

    /// Loads (or reloads) a model in explicit mode. A reload keeps the old versions serving until
    /// the new ones are ready. `configJSON` replaces config.pbtxt (Triton's `config` parameter).
    ///
    /// `files` carries model content instead of the repository's, as Triton's load API does: keys
    /// `file:<version>/<path>` (e.g. `file:1/model.onnx`), values the bytes. The files are written
    /// to a private folder, loaded from there and removed; a `configJSON` is then required.
    public func load(model name: String, configJSON: String? = nil, files: [String: Data] = [:]) async throws(TernError) {
        guard configuration.controlMode == .explicit else {
            throw TernError(.failedPrecondition, "explicit model load / unload is not allowed in model control mode '\(configuration.controlMode.rawValue)'; start with --model-control-mode explicit")
        }
        try Self.checkModelName(name)
        var override: ModelConfig? = nil
        if let configJSON, !configJSON.isEmpty {
            override = try ModelConfig.parse(json: configJSON, source: "load request for '\(name)'")
        }
        if !files.isEmpty {
            guard override != nil else {
                throw .invalidArgument("failed to load '\(name)': a load with file content needs a 'config' parameter")
            }
            let staging = try Self.stage(files, model: name)
            defer { try? FileManager.default.removeItem(at: staging) }
            try await loadModel(name, configOverride: override, loader: loader.reading(from: ModelRepository(root: staging)), versions: .policy)
            return
        }
        guard FileManager.default.fileExists(atPath: repository.modelDirectory(name).path) else {
            throw .notFound("failed to load '\(name)', no version is available: model folder \(repository.modelDirectory(name).path) does not exist")
        }
        try await loadModel(name, configOverride: override, versions: .policy)
    }

    /// Writes `file:<version>/<path>` contents under a new private folder as `<model>/<version>/<path>`.
    static func stage(_ files: [String: Data], model: String) throws(TernError) -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tern-load-\(UUID().uuidString)", isDirectory: true)
        do {
            for (key, data) in files {
                guard key.hasPrefix("file:") else { throw TernError.invalidArgument("unexpected load parameter '\(key)'") }
                let parts = key.dropFirst(5).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 2, let version = Int64(parts[0]), version > 0,
                    parts.dropFirst().allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("\\") })
                else {
                    throw TernError.invalidArgument("load parameter '\(key)' must be file:<version>/<path> inside the model folder")
                }
                let url = parts.reduce(root.appendingPathComponent(model, isDirectory: true)) { $0.appendingPathComponent($1) }
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try data.write(to: url)
            }
        } catch let error as TernError {
            try? FileManager.default.removeItem(at: root)
            throw error
        } catch {
            try? FileManager.default.removeItem(at: root)
            throw .internalError("cannot stage the model files of '\(model)': \(error)", cause: error)
        }
        return root
    }

    /// Unloads a model in explicit mode. Requests already running finish first.
    public func unload(model name: String) throws(TernError) {
        guard configuration.controlMode == .explicit else {
            throw TernError(.failedPrecondition, "explicit model load / unload is not allowed in model control mode '\(configuration.controlMode.rawValue)'; start with --model-control-mode explicit")
        }
        guard remove(name, reason: "unloaded", action: "unload") else { throw .notFound("failed to unload '\(name)': the model is not loaded") }
    }

    /// Drops a model's versions (requests already running finish first) and gives its memory back;
    /// a load in progress is abandoned. `forget` also drops its persisted decisions. False when
    /// the model is not known.
    func remove(_ name: String, reason: String, action: String, forget: Bool = false) -> Bool {
        let actions = registry.withLock { models -> [LifecycleAction<LoadedModel>]? in
            guard var lifecycle = models.lifecycles[name], lifecycle.phase != .absent else { return nil }
            let actions = lifecycle.unload(reason: reason, action: action, forget: forget)
            models.lifecycles[name] = lifecycle.isIdle ? nil : lifecycle
            return actions
        }
        guard let actions else { return false }
        ledger.release(name)
        perform(actions, model: name)
        logger.info("model unloaded", metadata: ["model": .string(name), "reason": .string(reason)])
        return true  // the memory goes back once running requests let go of the model (LoadedModel.release)
    }

    // MARK: Internals

    /// Reserves `bytes` for loading `name` under the memory policy, evicting the least recently
    /// used other models first when the policy says so; throws when it cannot fit.
    func admit(_ bytes: UInt64, for name: String) throws(TernError) {
        var evicted: [String] = []
        while true {
            guard let shortfall = ledger.reserve(bytes, for: name) else { break }
            guard ledger.policy.eviction == .lru, let victim = leastRecentlyUsed(excluding: name) else {
                let note = evicted.isEmpty ? "" : " (after evicting \(evicted.joined(separator: ", ")))"
                throw .unavailable("not enough memory to load '\(name)': it \(shortfall)\(note)")
            }
            logger.warning("evicting least recently used model to make room", metadata: ["model": .string(victim), "for": .string(name)])
            _ = remove(victim, reason: "evicted to make room for '\(name)' (--model-eviction lru)", action: "evict")
            evicted.append(victim)
        }
    }

    /// The ready model, other than `name`, whose last inference is oldest (never used first).
    private func leastRecentlyUsed(excluding name: String) -> String? {
        let candidates = registry.withLock { models in
            models.lifecycles.compactMap { key, lifecycle -> (String, UInt64)? in
                guard key != name, let loaded = lifecycle.served, !loaded.runners.isEmpty else { return nil }
                return (key, loaded.runners.values.map(\.statistics.snapshot.lastInference).max() ?? 0)
            }
        }
        return candidates.min { ($0.1, $0.0) < ($1.1, $1.0) }?.0
    }

    /// The process's resident memory in bytes (Linux `/proc/self/statm`).
    static func residentBytes() -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = UInt64(fields[1]) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    func runner(_ name: String, version: Int64?) throws(TernError) -> ModelVersionRunner {
        // Only the runner leaves the lock: no copy of the model's tables per request.
        let found: ModelVersionRunner?? = registry.withLock { models in
            guard let loaded = models.lifecycles[name]?.served, let newest = loaded.runners.keys.max() else { return nil }
            return .some(loaded.runners[version ?? newest])
        }
        guard let found else { throw Self.unknownModel(name) }
        guard let runner = found else {
            throw .notFound("Request for unknown model: '\(name)' version \(version ?? 0) is not at ready state")
        }
        return runner
    }

    private func readyVersions(_ name: String) -> [Int64] {
        registry.withLock { $0.lifecycles[name]?.served?.versions ?? [] }
    }

    /// A model name must be one folder of the repository: no path separators, not "." or "..".
    static func checkModelName(_ name: String) throws(TernError) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\0") else {
            throw .invalidArgument("'\(name)' is not a model name: it must name one folder of the model repository")
        }
    }

    static func unknownModel(_ name: String) -> TernError {
        .notFound("Request for unknown model: '\(name)' is not found")
    }
}
