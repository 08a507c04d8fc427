import CoreMetrics
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TernRuntime

/// Samples the device every `interval`, exports the reading as metrics, and (with a policy) runs
/// the thermal controller and carries out its decisions: power mode through `PowerModeManager`,
/// batch limits and paused models through the engine. Runs as a `Service` in `tern serve`.
public final class DeviceMonitor: Service, Sendable {
    /// What the monitor knows now; served as JSON on the metrics port (`/device/stats`).
    public struct Snapshot: Sendable, Codable {
        /// The latest telemetry reading, nil before the first sample.
        public var stats: DeviceStats?
        /// The thermal controller's state and recent decisions, nil when the monitor runs without a policy.
        public var policy: PolicyStatus?
    }

    /// The controller's state, and its recent decisions.
    public struct PolicyStatus: Sendable, Codable, Equatable {
        /// The throttling step in force: 0 is normal service, above 0 throttled, below 0 boosted.
        public var step: Int
        /// The hottest watched sensor at the latest reading, in °C (nil when none reported a temperature).
        public var watchedCelsius: Double?
        /// The factor the engine applies to every dynamic batcher's `max_batch_size` (1 = as configured).
        public var batchScale: Double
        /// Models the policy has paused, sorted by name.
        public var pausedModels: [String]
        /// The power mode the monitor last set, nil until it changes one.
        public var powerMode: String?
        /// The last 50 decisions, oldest first.
        public var decisions: [LoggedDecision]
    }

    /// One step change the controller made, as kept for `/device/stats` with what was done about it.
    public struct LoggedDecision: Sendable, Codable, Equatable {
        /// When the decision was taken, as ISO 8601 text.
        public var time: String
        /// The throttling step before the change.
        public var fromStep: Int
        /// The throttling step after the change.
        public var toStep: Int
        /// The controller's sentence for why the step changed, e.g. "throttle: 86.0 °C ≥ 85.0 °C".
        public var reason: String
        /// The actions attempted, in words (e.g. "power mode 15W", "batch scale 0.5").
        public var actions: [String]
        /// Actions that could not be carried out, and why.
        public var failures: [String]
    }

    private struct State {
        var stats: DeviceStats?
        var policy: ThermalPolicy?
        var watched: Double?
        var powerMode: String?
        var decisions: [LoggedDecision] = []
        /// Per model: successful requests and their total nanoseconds at the previous reading.
        var previousTotals: [String: (count: UInt64, ns: UInt64)] = [:]
        var previousInferences: UInt64?
    }

    /// Time between two samples.
    public let interval: Duration
    private let read: @Sendable () -> DeviceStats
    private let engine: InferenceServer?
    private let powerModes: PowerModeManager?
    private let metrics: DeviceMetrics
    private let logger: Logger
    private let state: Mutex<State>
    private let decisionCounter: @Sendable (String) -> Void

    /// - Parameters:
    ///   - read: one telemetry reading (`SystemTelemetry.read`, or a recorded trace in tests).
    ///   - policy: the thermal controller's settings; nil samples and exports only.
    ///   - powerModes: how to change the power mode; nil (or no nvpmodel) skips mode changes.
    public init(
        interval: Duration = .seconds(2), read: @escaping @Sendable () -> DeviceStats, engine: InferenceServer? = nil,
        policy: ThermalPolicy.Settings? = nil, powerModes: PowerModeManager? = nil,
        metricsFactory: any MetricsFactory = MetricsSystem.factory, logger: Logger
    ) {
        self.interval = interval
        self.read = read
        self.engine = engine
        self.powerModes = powerModes
        self.metrics = DeviceMetrics(factory: metricsFactory)
        self.logger = logger
        self.state = Mutex(State(policy: policy.map(ThermalPolicy.init(settings:))))
        self.decisionCounter = { reason in
            Counter(label: "tern_device_policy_decisions_total", dimensions: [("kind", reason)], factory: metricsFactory).increment()
        }
    }

    /// Samples every `interval` until the task is cancelled or a graceful shutdown begins.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                self.sample()
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// One round: read, export, decide, act. Returns the decision taken, if any.
    @discardableResult
    public func sample() -> ThermalPolicy.Decision? {
        let stats = read()
        metrics.record(stats)
        let (missing, idle) = latencyReport()
        let decision: ThermalPolicy.Decision? = state.withLock { s in
            s.stats = stats
            guard var policy = s.policy else { return nil }
            let celsius = policy.watchedCelsius(stats)
            s.watched = celsius
            let decision = policy.observe(.init(celsius: celsius, milliwatts: stats.totalMilliwatts, modelsMissingTarget: missing, idle: idle))
            s.policy = policy
            return decision
        }
        if let decision { apply(decision) }
        if let policy = state.withLock({ $0.policy }) {
            Gauge(label: "tern_device_policy_step", dimensions: [], factory: metrics.factory).record(Double(policy.step))
        }
        return decision
    }

    /// The latest reading and the controller's state, as `/device/stats` serves them.
    public var snapshot: Snapshot {
        state.withLock { s in
            Snapshot(stats: s.stats, policy: s.policy.map { policy in
                PolicyStatus(
                    step: policy.step, watchedCelsius: s.watched, batchScale: engine?.batchScale ?? 1,
                    pausedModels: engine.map { Array($0.pausedModels.keys).sorted() } ?? [], powerMode: s.powerMode,
                    decisions: s.decisions)
            })
        }
    }

    /// The snapshot as pretty JSON.
    public func snapshotJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? String(decoding: encoder.encode(snapshot), as: UTF8.self)) ?? "{}"
    }

    // MARK: Acting

    private func apply(_ decision: ThermalPolicy.Decision) {
        var failures: [String] = []
        var applied: [String] = []
        for action in decision.actions {
            switch action {
            case .setPowerMode(let mode):
                applied.append("power mode \(mode)")
                do {
                    guard let powerModes else { throw DeviceError("no power mode manager configured") }
                    try powerModes.set(mode)
                    state.withLock { $0.powerMode = mode }
                } catch {
                    failures.append("power mode \(mode): \(error)")
                }
            case .setBatchScale(let scale):
                applied.append("batch scale \(scale)")
                engine?.setBatchScale(scale)
            case .pauseModels(let models):
                applied.append("pause \(models.joined(separator: ","))")
                engine?.pause(models: models, reason: "shed by the thermal policy (\(decision.reason))")
            case .resumeModels(let models):
                applied.append("resume \(models.joined(separator: ","))")
                engine?.resume(models: models)
            }
        }
        let kind = decision.reason.split(separator: ":").first.map(String.init) ?? "change"
        decisionCounter(kind)
        logger.notice("device policy decision", metadata: [
            "from_step": .stringConvertible(decision.fromStep), "to_step": .stringConvertible(decision.toStep),
            "reason": .string(decision.reason), "actions": .string(applied.joined(separator: "; ")),
            "failures": .string(failures.joined(separator: "; ")),
        ])
        let logged = LoggedDecision(
            time: LifecycleEvent.iso8601(Date()), fromStep: decision.fromStep, toStep: decision.toStep,
            reason: decision.reason, actions: applied, failures: failures)
        state.withLock { s in
            s.decisions.append(logged)
            if s.decisions.count > 50 { s.decisions.removeFirst(s.decisions.count - 50) }
        }
    }

    /// Models whose mean latency since the previous reading exceeded their target, and whether
    /// no request at all arrived in between.
    private func latencyReport() -> ([String], Bool) {
        guard let engine else { return ([], false) }
        let targets = state.withLock { $0.policy?.settings.latencyTargetsMs ?? [:] }
        let all = (try? engine.statistics()) ?? []
        let inferences = all.reduce(UInt64(0)) { $0 + $1.inferenceCount }
        var totals: [String: (count: UInt64, ns: UInt64)] = [:]
        for entry in all where targets[entry.name] != nil {
            let current = totals[entry.name] ?? (0, 0)
            totals[entry.name] = (current.count + entry.success.count, current.ns + entry.success.ns)
        }
        return state.withLock { s in
            defer {
                s.previousTotals = totals
                s.previousInferences = inferences
            }
            var missing: [String] = []
            for (model, now) in totals {
                guard let before = s.previousTotals[model], now.count > before.count, now.ns >= before.ns, let target = targets[model] else { continue }
                let meanMs = Double(now.ns - before.ns) / Double(now.count - before.count) / 1e6
                if meanMs > target { missing.append(model) }
            }
            let idle = s.previousInferences.map { $0 == inferences } ?? false
            return (missing.sorted(), idle)
        }
    }
}
