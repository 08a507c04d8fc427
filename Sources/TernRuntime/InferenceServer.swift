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
    /// What the engine was started with: the repository, its control mode, and the limits and
    /// policies it applies.
    public let configuration: ServerConfiguration
    /// Where the engine, its loader and its models write their log.
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
    let anyPaused = Atomic(false)
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

    /// An engine for `configuration`'s repository with these backends (an ensemble backend is
    /// added), restoring the decisions `history` saved; no model loads until `start`.
    public init(configuration: ServerConfiguration, backends: [any Backend], history: any LifecycleHistory = InMemoryLifecycleHistory(), logger: Logger) {
        self.configuration = configuration
        self.history = history
        self.logger = logger
        self.repository = ModelRepository(root: configuration.repositoryPath)
        self.ledger = MemoryLedger(policy: configuration.memory)
        self.sharedMemory = Self.sharedMemoryRegistry(configuration, logger: logger)
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

    /// The shared-memory registry, with the CUDA runtime when client regions are allowed and one loads.
    private static func sharedMemoryRegistry(_ configuration: ServerConfiguration, logger: Logger) -> SharedMemoryRegistry {
        let allowed = configuration.allowClientSharedMemory
        let library = configuration.cudaRuntimeLibrary
        guard allowed, library != "none" else {
            let why = allowed ? "it was turned off (--cuda-runtime-library none)" : "client shared memory is disabled (--allow-client-shm)"
            return SharedMemoryRegistry(allowsRegistration: allowed, cudaUnavailableReason: why)
        }
        do {
            let cuda = try CUDARuntime.open(library)
            logger.info("CUDA shared memory through \(cuda.path)", metadata: ["devices": "\(cuda.deviceCount)"])
            return SharedMemoryRegistry(allowsRegistration: true, cuda: cuda)
        } catch {
            if library != nil { logger.error("no CUDA shared memory: \(error.message)") } else { logger.info("no CUDA shared memory: \(error.message)") }
            return SharedMemoryRegistry(allowsRegistration: true, cudaUnavailableReason: error.message)
        }
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

    /// Always true: the engine answers as long as the process runs (KServe's server live).
    public var isLive: Bool { true }

    /// Ready once start-up loading has finished and no model is loading. Unlike Triton, a model
    /// that failed to load does not make the server unready: the others keep serving, and the
    /// failure is reported per model (model ready, repository index).
    public var isReady: Bool {
        guard started.withLock({ $0 }) else { return false }
        return registry.withLock { models in !models.lifecycles.values.contains { $0.isFirstLoading } }
    }

    /// The server's name, version and supported protocol extensions, as KServe's server metadata
    /// reports them.
    public var serverMetadata: ServerMetadata {
        ServerMetadata(
            name: configuration.serverName, version: configuration.serverVersion,
            extensions: ServerMetadata.supportedExtensions + (sharedMemory.cuda == nil ? [] : ["cuda_shared_memory"]))
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

    /// The versions, platform and input and output tensors of a ready model (a virtual model
    /// reports its target's, under its own name); throws `notFound` when the model or version is
    /// not ready.
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

    /// Where each instance of a model with this config runs and with how many ONNX Runtime
    /// threads (the engine's thread budget: cores split evenly over the instances).
    public static func placements(for config: ModelConfig, cpuCores: Int) -> [InstancePlacement] {
        ModelLoader.placements(for: config, cpuCores: cpuCores)
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

    /// Stops the virtual model of that name from answering it; does nothing when none is registered.
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
}
