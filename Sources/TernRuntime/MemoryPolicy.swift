/// How the engine admits model loads against memory (`tern serve --memory-budget`,
/// `--memory-reserve`, `--model-eviction`).
///
/// Each load is estimated before it starts: the model files of the versions it will load times
/// the instances of each (every ONNX Runtime session holds its own weights) plus a fixed
/// allowance for arenas, or `parameters { key: "tern.memory_estimate_mb" }` when the config gives
/// one. After the load the engine measures how much the process really grew and keeps the larger
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

    /// Makes a policy from a budget in bytes (nil: none), a free-RAM reserve in bytes, a probe of free RAM and an
    /// eviction choice; the defaults admit every load.
    public init(budgetBytes: UInt64? = nil, reserveBytes: UInt64 = 0, availableBytes: (@Sendable () -> UInt64?)? = nil, eviction: Eviction = .none) {
        self.budgetBytes = budgetBytes
        self.reserveBytes = reserveBytes
        self.availableBytes = availableBytes
        self.eviction = eviction
    }

    /// Admits every load.
    public static let unlimited = MemoryPolicy()

    var isUnlimited: Bool { budgetBytes == nil && (availableBytes == nil || reserveBytes == 0) }
}
