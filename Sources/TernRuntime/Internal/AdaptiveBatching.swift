import TernCore

/// Tern's adaptive batching: tunes a dynamic batcher's effective `max_batch_size` and queue delay
/// from measured request latency, to keep p95 near a target while batching as much as the target
/// allows. Opt-in per model:
///
///     parameters { key: "tern.adaptive_batching.target_latency_ms" value: { string_value: "20" } }
///     parameters { key: "tern.adaptive_batching.min_batch_size" value: { string_value: "1" } }
///     parameters { key: "tern.adaptive_batching.max_batch_size" value: { string_value: "32" } }
///     parameters { key: "tern.adaptive_batching.max_queue_delay_us" value: { string_value: "2000" } }
///
/// The rule, over each window of finished requests (additive increase, multiplicative decrease):
/// - an execution itself takes more than half the target: the batch is too big for the budget,
///   so the limit drops by a quarter and the delay halves;
/// - else batches fill up to the limit (requests are waiting: latency is queueing, and a larger
///   batch serves more per execution): the limit grows by a quarter and the delay halves
///   (full batches form without waiting);
/// - else (light load) p95 above the target halves the delay, and p95 below 80 % of it lets the
///   delay grow by 100 µs so that larger batches form; in between nothing changes.
/// A pure function of its observations: see `AdaptiveBatchingTests`.
struct AdaptiveBatchController: Sendable, Equatable {
    struct Settings: Sendable, Equatable {
        var targetNs: UInt64
        var minBatch: Int
        var maxBatch: Int
        var maxDelayNs: UInt64
        /// Below this fraction of the target, the controller may grow the batch.
        var lowWater = 0.8
        var delayStepNs: UInt64 = 100_000
    }

    /// One window of finished requests.
    struct Window: Sendable, Equatable {
        var p95Ns: UInt64
        var meanBatch: Double
        /// Mean time of one execution (the model's own compute) in the window.
        var meanExecutionNs: UInt64
        var requests: Int
    }

    let settings: Settings
    private(set) var batchLimit: Int
    private(set) var delayNs: UInt64

    init(settings: Settings) {
        self.settings = settings
        batchLimit = settings.minBatch
        delayNs = 0
    }

    /// Applies one window; returns whether the limits changed.
    @discardableResult
    mutating func observe(_ window: Window) -> Bool {
        guard window.requests > 0 else { return false }
        let before = (batchLimit, delayNs)
        let target = Double(settings.targetNs)
        if Double(window.meanExecutionNs) > target * 0.5 {
            batchLimit = max(settings.minBatch, Int(Double(batchLimit) * 0.75))
            delayNs /= 2
        } else if window.meanBatch >= Double(batchLimit) * 0.75 {
            batchLimit = min(settings.maxBatch, batchLimit + max(1, batchLimit / 4))
            delayNs /= 2
        } else if Double(window.p95Ns) > target {
            delayNs /= 2
        } else if Double(window.p95Ns) < target * settings.lowWater {
            delayNs = min(settings.maxDelayNs, delayNs + settings.delayStepNs)
        }
        return before != (batchLimit, delayNs)
    }

    /// p95 of `latencies` (ns); 0 when empty.
    static func p95(_ latencies: [UInt64]) -> UInt64 {
        guard !latencies.isEmpty else { return 0 }
        let sorted = latencies.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.95).rounded(.up)) - 1)]
    }
}

extension AdaptiveBatchController.Settings {
    /// The settings a model config asks for; nil when adaptive batching is off.
    init?(config: ModelConfig) throws(TernError) {
        let prefix = "tern.adaptive_batching."
        func number(_ key: String) throws(TernError) -> Double? {
            guard let text = config.parameters[prefix + key]?.stringValue else { return nil }
            guard let value = Double(text), value >= 0 else {
                throw .invalidArgument("model '\(config.name)': parameters \(prefix + key) must be a non-negative number, not '\(text)'")
            }
            return value
        }
        guard let target = try number("target_latency_ms") else { return nil }
        guard case .dynamicBatching(let dynamic)? = config.schedulingChoice, config.maxBatchSize > 0 else {
            throw .invalidArgument("model '\(config.name)': \(prefix)target_latency_ms needs dynamic_batching and max_batch_size > 0")
        }
        let maxBatch = min(Int(try number("max_batch_size") ?? Double(config.maxBatchSize)), Int(config.maxBatchSize))
        let minBatch = max(1, min(Int(try number("min_batch_size") ?? 1), maxBatch))
        let delayUs = try number("max_queue_delay_us") ?? Double(max(dynamic.maxQueueDelayMicroseconds, 2_000))
        self.init(targetNs: UInt64(target * 1_000_000), minBatch: minBatch, maxBatch: max(maxBatch, 1), maxDelayNs: UInt64(delayUs * 1000))
    }
}
