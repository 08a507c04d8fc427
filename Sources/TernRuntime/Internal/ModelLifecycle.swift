import Foundation
import TernCore

/// One model's life as a value: what it serves, what is loading, who waits for a turn, and the
/// decisions that outlive a restart. Every event is a mutating method that returns what the owner
/// must do (`LifecycleAction`) after leaving the lock: release models, wake callers, record
/// events, persist decisions, start a grace timer. Nothing here blocks, sleeps, reads a clock or
/// touches ONNX Runtime, so every transition is tested on its own.
///
/// Two orthogonal parts make the phase (`loading`, `serving`, `swapping`, `grace`, `unavailable`):
/// `state`, what is served, and `turn`, the one load (or rollback) in progress. Loads of one
/// model run one at a time, in the order they were asked for; requests that ask for the same
/// thing while they wait are served by one load (a reload storm costs at most one load beyond
/// the running one).
struct ModelLifecycle<Model: LifecycleModel>: Sendable {
    let name: String
    private(set) var state: State = .absent
    private(set) var turn: Turn?
    private(set) var queue: [Group] = []
    private(set) var decisions: ModelDecisions
    /// Counts changes of the served set; a grace timer only ends the warm set of its generation.
    private(set) var generation: UInt64 = 0
    private(set) var lastSwap: SwapReport?
    /// The repository fingerprint of the last load attempt (poll mode reloads on change).
    private(set) var fingerprint: String = ""
    /// Why the model is unavailable, if it is.
    var reason: String {
        if case .unavailable(let reason) = state { return reason }
        return ""
    }

    init(name: String, decisions: ModelDecisions = ModelDecisions()) {
        self.name = name
        self.decisions = decisions
    }

    // MARK: Reading

    var phase: Phase {
        let loading = isLoading
        switch state {
        case .absent: return loading ? .loading : .absent
        case .unavailable: return loading ? .loading : .unavailable
        case .serving(_, let warm): return loading ? .swapping : warm == nil ? .serving : .grace
        }
    }

    /// The set taking traffic.
    var served: Model? {
        if case .serving(let current, _) = state { return current.model }
        return nil
    }

    /// The generation of the set taking traffic (what `warmExpired` compares).
    var servedGeneration: UInt64? {
        if case .serving(let current, _) = state { return current.generation }
        return nil
    }

    var warm: Model? {
        if case .serving(_, let warm?) = state { return warm.model }
        return nil
    }

    /// True while a load runs whose result may be served (an abandoned one no longer counts).
    var isLoading: Bool {
        if case .loading(let attempt)? = turn { return attempt.abandoned == nil }
        return false
    }

    /// True while a load that has never served anything runs (the server is not ready yet).
    var isFirstLoading: Bool {
        guard isLoading else { return false }
        if case .absent = state { return true }
        return false
    }

    // MARK: Turns

    enum Admission: Equatable {
        /// The caller's turn now: call `beginLoad` or `beginRollback` with its ticket.
        case go
        /// The caller waits; a `.wake` or `.resume` action names its ticket.
        case queued
    }

    /// A caller asks for a turn. Equal coalescible requests waiting in the queue share one turn.
    mutating func enqueue(_ request: Request, coalescible: Bool, ticket: UInt64) -> Admission {
        guard turn != nil || !queue.isEmpty else {
            turn = .reserved(ticket, abandoned: nil)
            return .go
        }
        if coalescible, let index = queue.lastIndex(where: { $0.request == request && $0.coalescible }), index == queue.count - 1 {
            queue[index].followers.append(ticket)
        } else {
            queue.append(Group(request: request, coalescible: coalescible, leader: ticket))
        }
        return .queued
    }

    /// The caller holding the turn starts its load: the versions are chosen now, from the pins
    /// and decisions as they stand when its turn comes.
    ///
    /// `ifGeneration` makes the load conditional: when the served set has changed since that
    /// generation (an unload, another load), the attempt begins abandoned and loads nothing.
    mutating func beginLoad(
        ticket: UInt64, choice: VersionChoice, gated: Bool, action: String, fingerprint: String, ifGeneration: UInt64? = nil
    ) -> Attempt {
        precondition(isReserved(ticket), "beginLoad without the turn")
        var versions: [Int64]?
        var gated = gated
        var action = action
        switch choice {
        case .pin(let pinned), .exactly(let pinned): versions = pinned
        case .policy: versions = nil
        case .keepPin:
            if let pinned = decisions.pinnedVersions {
                versions = pinned
            } else if served == nil, !decisions.rejectedVersions.isEmpty, decisions.rejectedFingerprint == Self.digest(fingerprint),
                !decisions.servedVersions.isEmpty
            {
                // The version policy would pick what the gates rejected from these very files:
                // serve what served before instead (it passed then).
                versions = decisions.servedVersions
                gated = false
                action = "restore"
            }
        }
        var attempt = Attempt(
            id: ticket, versions: versions, choice: choice, gated: gated, action: action, fingerprint: fingerprint,
            fromVersions: served?.versions ?? [])
        if case .reserved(_, let abandoned?)? = turn {
            attempt.abandoned = abandoned
        } else if let expected = ifGeneration, expected != generation {
            attempt.abandoned = "the model changed before the \(action) began"
        }
        if attempt.abandoned == nil { self.fingerprint = fingerprint }
        turn = .loading(attempt)
        return attempt
    }

    /// The running attempt, if any.
    var attempt: Attempt? {
        if case .loading(let attempt)? = turn { return attempt }
        return nil
    }

    private func isReserved(_ ticket: UInt64) -> Bool {
        if case .reserved(ticket, _)? = turn { return true }
        return false
    }

    /// Ends the turn: the next group's leader is woken.
    private mutating func passTurn(_ actions: inout [LifecycleAction<Model>]) {
        turn = nil
        guard !queue.isEmpty else { return }
        let next = queue.removeFirst()
        turn = .reserved(next.leader, abandoned: nil)
        actions.append(.wake(next.leader))
        if !next.followers.isEmpty {
            // Followers wait for the leader's result; remember them under its ticket.
            followers[next.leader] = next.followers
        }
    }

    /// Followers of the turn being performed, by leader ticket.
    private(set) var followers: [UInt64: [UInt64]] = [:]

    private mutating func finishTurn(ticket: UInt64, result: Result<SwapReport, TernError>, _ actions: inout [LifecycleAction<Model>]) {
        if let waiting = followers.removeValue(forKey: ticket), !waiting.isEmpty {
            actions.append(.resume(waiting, result))
        }
        passTurn(&actions)
    }

    // MARK: Loads

    /// How a load ended, as the owner saw it.
    enum Outcome: Sendable {
        /// Loaded (and passed its gates, when gated).
        case loaded(Model, gates: [GateResult], detail: String)
        case failed(TernError)
        /// Loaded but its gates said no; the owner has released the candidate.
        case rejected(versions: [Int64], gates: [GateResult], message: String)
    }

    /// The running attempt ended. Returns the caller's result and what to do.
    mutating func finish(
        _ attempt: Attempt, outcome: Outcome, durationMs: Double, graceSeconds: Double
    ) -> (Result<SwapReport, TernError>, [LifecycleAction<Model>]) {
        precondition(self.attempt?.id == attempt.id, "finish of an attempt that is not running")
        let current = self.attempt!
        var actions: [LifecycleAction<Model>] = []
        let result: Result<SwapReport, TernError>
        if let why = current.abandoned {
            if case .loaded(let model, _, _) = outcome { actions.append(.release(model)) }
            result = .failure(.unavailable("the load of '\(name)' was abandoned: \(why)"))
            finishTurn(ticket: attempt.id, result: result, &actions)
            return (result, actions)
        }
        switch outcome {
        case .loaded(let model, let gates, let detail):
            let toVersions = model.versions
            let report = SwapReport(
                model: name, fromVersions: current.fromVersions, toVersions: toVersions, accepted: true, gates: gates,
                durationMs: durationMs, detail: detail)
            generation += 1
            switch state {
            case .serving(let old, let oldWarm):
                if let oldWarm { actions.append(.release(oldWarm.model)) }
                if graceSeconds > 0 {
                    state = .serving(Served(model: model, generation: generation), warm: old)
                    actions.append(.expireWarm(generation: generation, afterSeconds: graceSeconds))
                } else {
                    state = .serving(Served(model: model, generation: generation), warm: nil)
                    actions.append(.release(old.model))
                }
                // A reload of the same versions (changed files) keeps the earlier rollback target.
                if old.model.versions != toVersions { decisions.rollbackVersions = old.model.versions }
            case .absent, .unavailable:
                state = .serving(Served(model: model, generation: generation), warm: nil)
            }
            switch current.choice {
            case .keepPin, .exactly: break
            case .policy: decisions.pinnedVersions = nil
            case .pin(let versions): decisions.pinnedVersions = versions
            }
            decisions.servedVersions = toVersions
            if !Set(toVersions).isDisjoint(with: decisions.rejectedVersions) {
                // A version once rejected now passed (its files changed): the rejection is over.
                decisions.rejectedVersions = []
                decisions.rejectedFingerprint = ""
            }
            lastSwap = report
            let eventAction = current.fromVersions.isEmpty ? current.action : (current.action == "load" ? "swap" : current.action)
            actions.append(.record(LifecycleEvent(
                model: name, action: eventAction, fromVersions: current.fromVersions, toVersions: toVersions, gates: gates,
                durationMs: durationMs, detail: detail)))
            actions.append(.persist(decisions))
            result = .success(report)
        case .failed(let error):
            if served == nil { state = .unavailable(reason: error.message) }
            actions.append(.record(LifecycleEvent(
                model: name, action: "load_failed", fromVersions: current.fromVersions, toVersions: current.versions ?? [],
                durationMs: durationMs, detail: error.message)))
            result = .failure(TernError(error.code, "failed to load '\(name)': \(error.message)"))
        case .rejected(let versions, let gates, let message):
            lastSwap = SwapReport(
                model: name, fromVersions: current.fromVersions, toVersions: versions, accepted: false, gates: gates,
                durationMs: durationMs, detail: message)
            decisions.rejectedVersions = versions
            decisions.rejectedFingerprint = Self.digest(current.fingerprint)
            actions.append(.record(LifecycleEvent(
                model: name, action: "swap_rejected", fromVersions: current.fromVersions, toVersions: versions, gates: gates,
                durationMs: durationMs, detail: message)))
            actions.append(.persist(decisions))
            if served == nil {
                state = .unavailable(reason: message)
                if !decisions.servedVersions.isEmpty, decisions.servedVersions != versions {
                    // Nothing serves: go back to what served before (it passed then).
                    actions.append(.restore(decisions.servedVersions, generation: generation))
                }
            }
            result = .failure(TernError(.failedPrecondition, message))
        }
        finishTurn(ticket: attempt.id, result: result, &actions)
        return (result, actions)
    }

    // MARK: Rollback

    enum RollbackStart {
        /// Done without loading (instant rollback to the warm set) or refused; the turn has passed.
        case done(Result<SwapReport, TernError>, [LifecycleAction<Model>])
        /// The earlier versions are no longer loaded: load them (ungated, pinned) with this attempt.
        case load(Attempt)
    }

    /// The caller holding the turn rolls back to the versions served before the last swap.
    mutating func beginRollback(ticket: UInt64, fingerprint: String) -> RollbackStart {
        precondition(isReserved(ticket), "beginRollback without the turn")
        var actions: [LifecycleAction<Model>] = []
        if case .reserved(_, let why?)? = turn {
            let error = TernError(.unavailable, "the rollback of '\(name)' was abandoned: \(why)")
            finishTurn(ticket: ticket, result: .failure(error), &actions)
            return .done(.failure(error), actions)
        }
        if case .serving(let current, let warm?) = state {
            generation += 1
            let from = current.model.versions
            let to = warm.model.versions
            state = .serving(Served(model: warm.model, generation: generation), warm: nil)
            actions.append(.release(current.model))
            decisions.rollbackVersions = from
            decisions.pinnedVersions = to
            decisions.servedVersions = to
            let report = SwapReport(
                model: name, fromVersions: from, toVersions: to, accepted: true, gates: [], durationMs: 0,
                detail: "rolled back to the warm previous versions")
            lastSwap = report
            actions.append(.record(LifecycleEvent(
                model: name, action: "rollback", fromVersions: from, toVersions: to, durationMs: 0, detail: report.detail)))
            actions.append(.persist(decisions))
            finishTurn(ticket: ticket, result: .success(report), &actions)
            return .done(.success(report), actions)
        }
        let target = decisions.rollbackVersions
        guard !target.isEmpty, target != served?.versions else {
            let error = TernError(.failedPrecondition, "cannot roll back '\(name)': no earlier versions were served")
            finishTurn(ticket: ticket, result: .failure(error), &actions)
            return .done(.failure(error), actions)
        }
        return .load(beginLoad(ticket: ticket, choice: .pin(target), gated: false, action: "rollback", fingerprint: fingerprint))
    }

    // MARK: Grace, unload

    /// The grace period of `generation` ended: the warm set goes (if it is still that one's).
    mutating func warmExpired(generation expired: UInt64) -> [LifecycleAction<Model>] {
        guard case .serving(let current, let warm?) = state, current.generation == expired else { return [] }
        state = .serving(current, warm: nil)
        return [.release(warm.model)]
    }

    /// Stops serving at once (requests already running finish on what they hold). A load in
    /// progress is abandoned, and the callers still waiting for a turn are answered with an error.
    /// `forget` also drops the decisions (the model left the repository).
    mutating func unload(reason: String, action: String, forget: Bool = false) -> [LifecycleAction<Model>] {
        var actions: [LifecycleAction<Model>] = []
        let from = served?.versions ?? []
        if case .serving(let current, let warm) = state {
            actions.append(.release(current.model))
            if let warm { actions.append(.release(warm.model)) }
        }
        state = forget ? .absent : .unavailable(reason: reason)
        generation += 1
        // A load in progress, or one whose caller has its turn but has not begun, never serves.
        switch turn {
        case .loading(var attempt)?:
            attempt.abandoned = "the model was \(reason) while it loaded"
            turn = .loading(attempt)
        case .reserved(let ticket, _)?:
            turn = .reserved(ticket, abandoned: "the model was \(reason) before the load began")
        case nil:
            break
        }
        let error = TernError(.unavailable, "'\(name)' was \(reason) before this request's turn came")
        let waiting = queue.flatMap { [$0.leader] + $0.followers }
        queue.removeAll()
        if !waiting.isEmpty { actions.append(.resume(waiting, .failure(error))) }
        if forget {
            decisions = ModelDecisions()
            fingerprint = ""
            actions.append(.forget)
        }
        actions.append(.record(LifecycleEvent(model: name, action: action, fromVersions: from, detail: reason)))
        return actions
    }

    /// True when nothing is loaded, loading or waiting: the owner may drop the value.
    var isIdle: Bool {
        if case .absent = state, turn == nil, queue.isEmpty { return true }
        return false
    }

    /// A short digest of a repository fingerprint, for the persisted decisions: the fingerprint
    /// itself lists every file.
    static func digest(_ text: String) -> String { StableDigest.hex(text) }
}
