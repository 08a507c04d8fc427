import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import TernCore

/// Load shaping set by a device policy: the batch scale and paused models.
extension InferenceServer {
    // MARK: Load shaping

    /// Scales every dynamic batcher's `max_batch_size` by `scale` in (0, 1]; 1 restores the
    /// configured sizes. Applies to models loaded later too. A device policy calls it to shed
    /// heat: smaller batches, shorter bursts of work.
    public func setBatchScale(_ scale: Double) {
        let clamped = min(max(scale, 0.0001), 1)
        // Under the shaping lock throughout (shaping → registry), so a swap finishing meanwhile
        // applies the new scale to its set after this (see `run` in the lifecycle).
        shaping.withLock { shaping in
            shaping.batchScale = clamped
            // The warm set too: a rollback puts it back in service.
            let runners = registry.withLock { models in
                models.lifecycles.values.flatMap { lifecycle in [lifecycle.served, lifecycle.warm].compactMap { $0 }.flatMap { $0.runners.values } }
            }
            for runner in runners { runner.scaleBatches(clamped) }
        }
    }

    /// The scale last set by `setBatchScale` (1: the configured batch sizes).
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

    /// Ends the pause of these models (see `pause`): their requests are served again at once.
    public func resume(models: [String]) {
        shaping.withLock { shaping in
            for model in models { shaping.paused[model] = nil }
            anyPaused.store(!shaping.paused.isEmpty, ordering: .relaxed)
        }
        logger.info("models resumed", metadata: ["models": .string(models.joined(separator: ","))])
    }

    /// Paused models and why.
    public var pausedModels: [String: String] { shaping.withLock { $0.paused } }
}
