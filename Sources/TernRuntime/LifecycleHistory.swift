import Foundation
import Synchronization

/// One change in a model's life: a load, a swap to new versions (with its gate results), a swap
/// the gates rejected, a rollback, an unload or an eviction. `tern model history` shows them.
public struct LifecycleEvent: Sendable, Codable, Equatable {
    /// ISO 8601, UTC.
    public var time: String
    public var model: String
    /// load, swap, swap_rejected, load_failed, rollback, unload, evict.
    public var action: String
    public var fromVersions: [Int64]
    public var toVersions: [Int64]
    public var gates: [GateResult]
    /// From the start of the load to serving the new versions (or to the rejection), in ms.
    public var durationMs: Double?
    public var detail: String
    /// Who asked for the change: the client's address, the name of the key that opened the
    /// restricted group and the TLS client certificate's name where there are any (empty for the
    /// server's own changes: start-up loads, polling, evictions).
    public var by: String

    /// Who the changes made in the current task are recorded as made by; the frontends set it
    /// around each control request.
    @TaskLocal public static var requestedBy: String?

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
    public func savedDecisions() -> [String: ModelDecisions] { [:] }
}

/// Keeps the last 1000 events, and the decisions, in memory (an engine restarted with the same
/// instance restores them).
public final class InMemoryLifecycleHistory: LifecycleHistory {
    private let stored = Mutex<[LifecycleEvent]>([])
    private let decisions = Mutex<[String: ModelDecisions]>([:])

    public func save(_ decisions: ModelDecisions?, model: String) {
        self.decisions.withLock { $0[model] = decisions }
    }

    public func savedDecisions() -> [String: ModelDecisions] { decisions.withLock { $0 } }

    public init() {}

    public func record(_ event: LifecycleEvent) {
        stored.withLock { events in
            events.append(event)
            if events.count > 1000 { events.removeFirst(events.count - 1000) }
        }
    }

    public func events(model: String?, limit: Int) -> [LifecycleEvent] {
        let all = stored.withLock { $0 }.filter { model == nil || $0.model == model }
        return Array(all.suffix(limit))
    }
}

/// The outcome of one gate, as reported by a swap and stored in the lifecycle history.
public struct GateResult: Sendable, Codable, Equatable {
    public var name: String
    public var passed: Bool
    public var measured: Double
    public var threshold: Double
    public var detail: String

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
    public var model: String
    public var fromVersions: [Int64]
    public var toVersions: [Int64]
    public var accepted: Bool
    public var gates: [GateResult]
    public var durationMs: Double
    public var detail: String
}

/// A model's lifecycle state (`tern model status`).
public struct ModelLifecycleStatus: Sendable, Codable, Equatable {
    public var model: String
    /// READY, LOADING or UNAVAILABLE, as Triton's model states.
    public var state: String
    /// The lifecycle phase: loading, serving, swapping, grace (the replaced versions are still
    /// loaded for an instant rollback) or unavailable.
    public var phase: String
    public var servingVersions: [Int64]
    /// Versions pinned by promote/rollback (nil: the version policy decides).
    public var pinnedVersions: [Int64]?
    /// What a rollback would go back to, and whether it is still loaded (instant rollback).
    public var previousVersions: [Int64]
    public var previousWarm: Bool
    /// Versions the gates rejected (not tried again from the same files).
    public var rejectedVersions: [Int64]
    public var memoryBytes: UInt64?
    public var lastSwap: SwapReport?
}
