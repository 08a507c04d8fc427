/// How the engine admits model loads against memory (`tern serve --memory-budget`,
/// `--memory-reserve`, `--model-eviction`).
///
/// Each load is estimated before it starts: the model files of the versions it will load times
/// the instances of each (every ONNX Runtime session holds its own weights) plus a fixed
/// allowance for arenas, or `parameters { key: "tern.memory_estimate_mb" }` when the config gives
/// one. A `KIND_GPU` instance's weights are counted on the GPU it is placed on; the budget counts
/// host and GPU bytes together. After the load the engine measures how much the process really grew and keeps the larger
/// of the two on its books until the model is unloaded.
public struct MemoryPolicy: Sendable {
    /// What to do when a load does not fit.
    public enum Eviction: String, Sendable, CaseIterable {
        /// Refuse the load with an error that says how much is missing.
        case none
        /// Unload the least recently used other models until it fits.
        case lru
    }

    /// The most memory the loaded models may hold together, in bytes; nil: no budget.
    public var budgetBytes: UInt64?
    /// Free RAM a load must leave untouched, in bytes (needs `availableBytes`).
    public var reserveBytes: UInt64
    /// Free RAM right now, in bytes. On Jetson boards the GPU allocates from the same RAM, so this
    /// is what a model can really get (TernDevice's `SystemTelemetry.availableMemoryBytes`).
    public var availableBytes: (@Sendable () -> UInt64?)?
    /// What to do when a load does not fit: refuse it, or unload the least recently used other models.
    public var eviction: Eviction
    /// Free memory on GPU `index` right now, in bytes, nil when unknown (TernDevice's `NVML`, on
    /// discrete GPUs). When set, a load whose GPU instances need more than a GPU has free is
    /// refused, and the free-RAM check counts only host bytes; without it (no NVML: a Jetson,
    /// whose GPU allocates from RAM, or no GPU) the free-RAM check counts GPU bytes too.
    public var gpuAvailableBytes: (@Sendable (Int) -> UInt64?)?

    /// Makes a policy from a budget in bytes (nil: none), a free-RAM reserve in bytes, a probe of free RAM and an
    /// eviction choice; the defaults admit every load.
    public init(
        budgetBytes: UInt64? = nil, reserveBytes: UInt64 = 0, availableBytes: (@Sendable () -> UInt64?)? = nil, eviction: Eviction = .none,
        gpuAvailableBytes: (@Sendable (Int) -> UInt64?)? = nil
    ) {
        self.budgetBytes = budgetBytes
        self.reserveBytes = reserveBytes
        self.availableBytes = availableBytes
        self.eviction = eviction
        self.gpuAvailableBytes = gpuAvailableBytes
    }

    /// Admits every load.
    public static let unlimited = MemoryPolicy()

    var isUnlimited: Bool { budgetBytes == nil && (availableBytes == nil || reserveBytes == 0) && gpuAvailableBytes == nil }
}

/// What a load is expected to take: bytes of host RAM, and bytes on each GPU its GPU instances
/// are placed on (ONNX Runtime's CUDA and TensorRT providers keep a session's weights there).
public struct MemoryEstimate: Sendable, Equatable, ExpressibleByIntegerLiteral {
    /// Bytes of host RAM.
    public var hostBytes: UInt64
    /// Bytes on each GPU, by device index.
    public var gpuBytes: [Int: UInt64]

    /// Makes an estimate of `hostBytes` of RAM and `gpuBytes` on the GPUs.
    public init(hostBytes: UInt64 = 0, gpuBytes: [Int: UInt64] = [:]) {
        self.hostBytes = hostBytes
        self.gpuBytes = gpuBytes.filter { $0.value > 0 }
    }

    /// An estimate of `value` bytes of host RAM.
    public init(integerLiteral value: UInt64) { self.init(hostBytes: value) }

    /// Host and GPU bytes together (what `--memory-budget` counts).
    public var totalBytes: UInt64 { gpuBytes.values.reduce(hostBytes, +) }
}
