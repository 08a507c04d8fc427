import Foundation
import Synchronization

/// One change in a model's life: a load, a swap to new versions (with its gate results), a swap
/// the gates rejected, a rollback, an unload or an eviction. `tern model history` shows them.
public struct LifecycleEvent: Sendable, Codable, Equatable {
    /// ISO 8601, UTC.
    public var time: String
    /// The name of the model that changed.
    public var model: String
    /// load, swap, swap_rejected, load_failed, rollback, unload, evict.
    public var action: String
    /// The versions served before the change (empty when none were).
    public var fromVersions: [Int64]
    /// The versions the change loaded or tried to load (empty for an unload or eviction).
    public var toVersions: [Int64]
    /// The results of the swap gates the new versions went through (empty when none ran).
    public var gates: [GateResult]
    /// From the start of the load to serving the new versions (or to the rejection), in ms.
    public var durationMs: Double?
    /// A human-readable note on the change: what the load reported, the error or rejection message, or why
    /// the model was removed.
    public var detail: String
    /// Who asked for the change: the client's address, the name of the key that opened the
    /// restricted group and the TLS client certificate's name where there are any (empty for the
    /// server's own changes: start-up loads, polling, evictions).
    public var by: String

    /// Who the changes made in the current task are recorded as made by; the frontends set it
    /// around each control request.
    @TaskLocal public static var requestedBy: String?

    /// Makes an event of `action` on `model` at `time` (kept as ISO 8601 UTC); `by` defaults to `requestedBy`, else "".
    public init(
        time: Date = Date(), model: String, action: String, fromVersions: [Int64] = [], toVersions: [Int64] = [],
        gates: [GateResult] = [], durationMs: Double? = nil, detail: String = "", by: String? = nil
    ) {
        self.by = by ?? Self.requestedBy ?? ""
        self.time = Self.iso8601(time)
        self.model = model
        self.action = action
        self.fromVersions = fromVersions
        self.toVersions = toVersions
        self.gates = gates
        self.durationMs = durationMs
        self.detail = detail
    }
}

extension LifecycleEvent {
    /// `2026-11-27T01:02:03Z`. Formatted by hand: Foundation's date formatters pull in ICU's
    /// data, megabytes of resident memory for one timestamp format.
    public static func iso8601(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}

/// Where the engine writes lifecycle events. Tern's server keeps them in SQLite
/// (`TernStore.SQLiteLifecycleHistory`); an embedding app may keep them in memory or its own store.
public protocol LifecycleHistory: Sendable {
    func record(_ event: LifecycleEvent)
    /// The newest `limit` events, oldest first; of one model, or of all when `model` is nil.
    func events(model: String?, limit: Int) -> [LifecycleEvent]
    /// Keeps (or, with nil, forgets) the decisions about a model that must survive a restart:
    /// pins, the rollback target, the versions last served and those the gates rejected.
    func save(_ decisions: ModelDecisions?, model: String)
    /// The decisions saved for every model, read once when the engine starts.
    func savedDecisions() -> [String: ModelDecisions]
}

extension LifecycleHistory {
    /// A history that does not keep decisions: a restart starts from the version policies.
    public func save(_ decisions: ModelDecisions?, model: String) {}
    /// Returns no saved decisions, so every model starts from its version policy.
    public func savedDecisions() -> [String: ModelDecisions] { [:] }
}

/// Keeps the last 1000 events, and the decisions, in memory (an engine restarted with the same
/// instance restores them).
public final class InMemoryLifecycleHistory: LifecycleHistory {
    private let stored = Mutex<[LifecycleEvent]>([])
    private let decisions = Mutex<[String: ModelDecisions]>([:])

    /// Keeps `decisions` for `model` in memory, or forgets the model's decisions when nil.
    public func save(_ decisions: ModelDecisions?, model: String) {
        self.decisions.withLock { $0[model] = decisions }
    }

    /// Returns the decisions saved for every model, keyed by model name.
    public func savedDecisions() -> [String: ModelDecisions] { decisions.withLock { $0 } }

    /// Makes an empty in-memory history.
    public init() {}

    /// Appends `event`, dropping the oldest events beyond the newest 1000.
    public func record(_ event: LifecycleEvent) {
        stored.withLock { events in
            events.append(event)
            if events.count > 1000 { events.removeFirst(events.count - 1000) }
        }
    }

    /// Returns the newest `limit` events, oldest first, of `model` or of every model when it is nil.
    public func events(model: String?, limit: Int) -> [LifecycleEvent] {
        let all = stored.withLock { $0 }.filter { model == nil || $0.model == model }
        return Array(all.suffix(limit))
    }
}

/// The outcome of one gate, as reported by a swap and stored in the lifecycle history.
public struct GateResult: Sendable, Codable, Equatable {
    /// The gate's name: memory, latency, latency ratio, accuracy, agreement or validation set.
    public var name: String
    /// Whether the candidate versions passed this gate.
    public var passed: Bool
    /// What the gate measured on the candidate: MB grown, p95 latency in ms, or a fraction of rows.
    public var measured: Double
    /// The limit `measured` was held to, in its unit: a maximum for memory and latency, a minimum for accuracy
    /// and agreement.
    public var threshold: Double
    /// A human-readable account of the measurement, or the error that stopped the gate.
    public var detail: String

    /// Makes a gate result from the gate's name, verdict, measured value, threshold and explanation.
    public init(name: String, passed: Bool, measured: Double, threshold: Double, detail: String) {
        self.name = name
        self.passed = passed
        self.measured = measured
        self.threshold = threshold
        self.detail = detail
    }
}

/// What a load, promote or rollback did: the versions before and after, the gates and the time
/// from "load" to "serving the new versions".
public struct SwapReport: Sendable, Codable, Equatable {
    /// The name of the model swapped.
    public var model: String
    /// The versions served before the swap.
    public var fromVersions: [Int64]
    /// The versions the swap put into service, or tried to when it was rejected.
    public var toVersions: [Int64]
    /// Whether the new versions now serve (false: the gates rejected them).
    public var accepted: Bool
    /// The results of the gates the new versions went through (empty for ungated loads and instant rollbacks).
    public var gates: [GateResult]
    /// The time from the start of the load to serving the new versions (or to the rejection), in milliseconds.
    public var durationMs: Double
    /// A human-readable note on the swap, or the reason the gates rejected it.
    public var detail: String
}

/// A model's lifecycle state (`tern model status`).
public struct ModelLifecycleStatus: Sendable, Codable, Equatable {
    /// The name of the model this status describes.
    public var model: String
    /// READY, LOADING or UNAVAILABLE, as Triton's model states.
    public var state: String
    /// The lifecycle phase: loading, serving, swapping, grace (the replaced versions are still
    /// loaded for an instant rollback) or unavailable.
    public var phase: String
    /// The versions answering requests now (empty when none do).
    public var servingVersions: [Int64]
    /// Versions pinned by promote/rollback (nil: the version policy decides).
    public var pinnedVersions: [Int64]?
    /// What a rollback would go back to, and whether it is still loaded (instant rollback).
    public var previousVersions: [Int64]
    /// Whether the versions a rollback would go back to are still loaded, so the rollback is instant.
    public var previousWarm: Bool
    /// Versions the gates rejected (not tried again from the same files).
    public var rejectedVersions: [Int64]
    /// Memory booked for the model (the larger of its estimate and its measured growth), in bytes; nil when none is.
    public var memoryBytes: UInt64?
    /// The report of the latest load, promote or rollback, accepted or rejected; nil before the first.
    public var lastSwap: SwapReport?
}
