import Synchronization
import TernCore

/// The engine's books of model memory: what each loaded model holds and what loads in progress
/// have reserved, checked against the `MemoryPolicy` before a load starts.
final class MemoryLedger: Sendable {
    let policy: MemoryPolicy
    private let books = Mutex(Books())

    struct Books {
        /// Bytes held by each loaded model.
        var held: [String: UInt64] = [:]
        /// Bytes reserved by loads in progress, by model.
        var reserved: [String: UInt64] = [:]
        /// Bytes loads in progress will take on each GPU (not yet in the GPU's used memory).
        var reservedOnGPU: [Int: UInt64] = [:]
        /// Bytes of the sets a swap replaced, kept warm for an instant rollback, by model.
        var warm: [String: UInt64] = [:]
        var total: UInt64 { held.values.reduce(0, +) + reserved.values.reduce(0, +) + warm.values.reduce(0, +) }
    }

    init(policy: MemoryPolicy) {
        self.policy = policy
    }

    /// Why `estimate` more for `model` does not fit, or nil when it does (and is then reserved).
    /// A model being reloaded keeps its current holding on the books: old and new versions live
    /// side by side until the swap.
    func reserve(_ estimate: MemoryEstimate, for model: String) -> String? {
        let available = policy.availableBytes?()
        let gpuFree = policy.gpuAvailableBytes.map { probe in estimate.gpuBytes.keys.reduce(into: [Int: UInt64]()) { $0[$1] = probe($1) } }
        let bytes = estimate.totalBytes
        return books.withLock { books in
            if let budget = policy.budgetBytes, books.total + bytes > budget {
                return "needs about \(Self.mb(bytes)) but only \(Self.mb(budget - min(budget, books.total))) of the \(Self.mb(budget)) model memory budget is free"
            }
            // With a probe of the GPUs their memory is checked on its own; without one (a Jetson
            // board, whose GPU allocates from RAM) GPU bytes come out of RAM too.
            let fromRAM = gpuFree == nil ? bytes : estimate.hostBytes
            if let available, policy.reserveBytes > 0, available < fromRAM + policy.reserveBytes {
                return "needs about \(Self.mb(fromRAM)) but the machine has \(Self.mb(available)) free and \(Self.mb(policy.reserveBytes)) must stay free (--memory-reserve)"
            }
            for (gpu, needed) in estimate.gpuBytes.sorted(by: { $0.key < $1.key }) {
                guard let free = gpuFree?[gpu] ?? nil else { continue }
                let pending = books.reservedOnGPU[gpu] ?? 0
                if free < pending + needed {
                    return "needs about \(Self.mb(needed)) on GPU \(gpu) but it has \(Self.mb(free - min(free, pending))) free"
                        + (pending > 0 ? " (\(Self.mb(pending)) more are reserved by loads in progress)" : "")
                }
            }
            books.reserved[model, default: 0] += bytes
            for (gpu, needed) in estimate.gpuBytes { books.reservedOnGPU[gpu, default: 0] += needed }
            return nil
        }
    }

    /// A load finished: its reservation becomes the model's holding (or is dropped on failure).
    /// `keepsWarm`: the set it replaced stays loaded for the grace period, and on the books.
    func settle(_ model: String, reserved estimate: MemoryEstimate, holding: UInt64?, keepsWarm: Bool = false) {
        books.withLock { books in
            let bytes = estimate.totalBytes
            let left = (books.reserved[model] ?? 0) - min(books.reserved[model] ?? 0, bytes)
            books.reserved[model] = left == 0 ? nil : left
            // Once loaded, the GPU's own used memory shows the bytes: the reservation is released.
            for (gpu, needed) in estimate.gpuBytes {
                let rest = (books.reservedOnGPU[gpu] ?? 0) - min(books.reservedOnGPU[gpu] ?? 0, needed)
                books.reservedOnGPU[gpu] = rest == 0 ? nil : rest
            }
            guard let holding else { return }
            books.warm[model] = keepsWarm ? books.held[model] : nil
            books.held[model] = holding
        }
    }

    /// The grace period ended: the warm set was released.
    func releaseWarm(_ model: String) {
        _ = books.withLock { $0.warm.removeValue(forKey: model) }
    }

    /// A rollback put the warm set back in service and released the one that served.
    func rolledBackToWarm(_ model: String) {
        books.withLock { books in
            if let warm = books.warm.removeValue(forKey: model) { books.held[model] = warm }
        }
    }

    /// The model was unloaded (with its warm set).
    func release(_ model: String) {
        books.withLock { books in
            books.held[model] = nil
            books.warm[model] = nil
        }
    }

    /// Bytes of `model`'s warm set, if one is kept.
    func warmHolding(_ model: String) -> UInt64? { books.withLock { $0.warm[model] } }

    func holding(_ model: String) -> UInt64? { books.withLock { $0.held[model] } }

    static func mb(_ bytes: UInt64) -> String { "\((bytes + (1 << 19)) >> 20) MB" }
}
