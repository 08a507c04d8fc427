import Foundation

/// How the engine finds and manages models; the CLI's `serve` options map onto it one to one.
public struct ServerConfiguration: Sendable {
    /// Triton's model control modes.
    public enum ModelControlMode: String, Sendable, CaseIterable {
        /// Load every model at start; no load/unload requests.
        case none
        /// Load only `startupModels`; clients load and unload through the repository API.
        case explicit
        /// Load every model at start and rescan the repository every `pollInterval`.
        case poll
    }

    /// The model repository's directory, holding one folder per model.
    public var repositoryPath: URL
    /// How models are loaded and unloaded: all at start, on client request, or by polling the repository.
    public var controlMode: ModelControlMode
    /// Models loaded at start in explicit mode; ["*"] loads all.
    public var startupModels: [String]
    /// Complete missing or partial configs from the model file (Triton's auto-complete).
    public var autoCompleteConfig: Bool
    /// How often poll mode rescans the repository for changed models (15 seconds by default).
    public var pollInterval: Duration
    /// CPU cores the ONNX Runtime thread budget is split over.
    public var cpuCores: Int
    /// Triton's `--rate-limit=execution_count`: instances execute only while holding the resources
    /// their `instance_group.rate_limiter` asks for (off: they run freely).
    public var rateLimit: Bool
    /// Sizes of rate-limiter resources (`--rate-limit-resource NAME:COUNT`); an unnamed one is as
    /// large as the largest single instance's claim.
    public var rateLimitResources: [String: Int]
    /// How model loads are admitted against memory (budget, free-RAM reserve, eviction).
    public var memory: MemoryPolicy
    /// Whether clients may register system shared memory (`--allow-client-shm`; off by default).
    public var allowClientSharedMemory: Bool
    /// The CUDA runtime the CUDA shared-memory extension opens client regions with
    /// (`--cuda-runtime-library`): nil tries `CUDARuntime.defaultLibraries`, "none" turns the
    /// extension off. Loaded only when `allowClientSharedMemory` is on.
    public var cudaRuntimeLibrary: String?
    /// Most instances one model may ask for over its instance groups (`--max-instances-per-model`).
    public var maxInstancesPerModel: Int
    /// Reported by server metadata.
    public var serverName: String
    /// The version string server metadata reports (Tern's own version by default).
    public var serverVersion: String

    /// Makes a configuration from the repository path and the `serve` options, raising the core count and per-model
    /// instance limit to at least 1; the limit defaults to `defaultMaxInstances(cpuCores:)`.
    public init(
        repositoryPath: URL, controlMode: ModelControlMode = .none, startupModels: [String] = [],
        autoCompleteConfig: Bool = true, pollInterval: Duration = .seconds(15),
        cpuCores: Int = ProcessInfo.processInfo.activeProcessorCount,
        rateLimit: Bool = false, rateLimitResources: [String: Int] = [:], memory: MemoryPolicy = .unlimited,
        allowClientSharedMemory: Bool = false, cudaRuntimeLibrary: String? = nil, maxInstancesPerModel: Int? = nil, serverName: String = "tern", serverVersion: String = TernVersion.current
    ) {
        self.repositoryPath = repositoryPath
        self.controlMode = controlMode
        self.startupModels = startupModels
        self.autoCompleteConfig = autoCompleteConfig
        self.pollInterval = pollInterval
        self.cpuCores = max(cpuCores, 1)
        self.rateLimit = rateLimit
        self.rateLimitResources = rateLimitResources
        self.memory = memory
        self.allowClientSharedMemory = allowClientSharedMemory
        self.cudaRuntimeLibrary = cudaRuntimeLibrary
        self.maxInstancesPerModel = max(maxInstancesPerModel ?? Self.defaultMaxInstances(cpuCores: max(cpuCores, 1)), 1)
        self.serverName = serverName
        self.serverVersion = serverVersion
    }
}

extension ServerConfiguration {
    /// Eight instances per core, at least 16: beyond that instances only queue for the same cores
    /// (each holds a session and its arenas), and a config asking for 100 000 would take minutes
    /// and gigabytes before failing.
    public static func defaultMaxInstances(cpuCores: Int) -> Int { max(16, 8 * cpuCores) }
}

/// Tern's version.
public enum TernVersion {
    /// Tern's version string, shown by `tern --version` and reported as the default server version.
    public static let current = "0.1.0"
}
