import Testing
import TernCore
@testable import TernRuntime

/// The lifecycle state machine on its own: no ONNX Runtime, no clock, no threads. Each test
/// drives the transitions the engine performs and checks the phase, the decisions and the actions.
@Suite struct ModelLifecycleTests {
    struct Fake: LifecycleModel, Equatable {
        var versions: [Int64]
        var tag = ""
    }

    typealias Lifecycle = ModelLifecycle<Fake>

    static func released(_ actions: [LifecycleAction<Fake>]) -> [[Int64]] {
        actions.compactMap { if case .release(let model) = $0 { return model.versions } else { return nil } }
    }

    static func events(_ actions: [LifecycleAction<Fake>]) -> [String] {
        actions.compactMap { if case .record(let event) = $0 { return event.action } else { return nil } }
    }

    static func persisted(_ actions: [LifecycleAction<Fake>]) -> ModelDecisions? {
        actions.compactMap { if case .persist(let decisions) = $0 { return decisions } else { return nil } }.last
    }

    static func woken(_ actions: [LifecycleAction<Fake>]) -> [UInt64] {
        actions.compactMap { if case .wake(let ticket) = $0 { return ticket } else { return nil } }
    }

    static func resumed(_ actions: [LifecycleAction<Fake>]) -> [UInt64] {
        actions.flatMap { action -> [UInt64] in if case .resume(let tickets, _) = action { return tickets } else { return [] } }
    }

    /// Runs one load to the end: enqueue (it must get the turn), begin, finish.
    @discardableResult
    static func load(
        _ lifecycle: inout Lifecycle, _ model: Fake, ticket: UInt64, choice: VersionChoice = .keepPin, grace: Double = 60,
        fingerprint: String = "f1"
    ) -> (Result<SwapReport, TernError>, [LifecycleAction<Fake>]) {
        #expect(lifecycle.enqueue(.load(choice, gated: true, action: "load"), coalescible: true, ticket: ticket) == .go)
        let attempt = lifecycle.beginLoad(ticket: ticket, choice: choice, gated: true, action: "load", fingerprint: fingerprint)
        return lifecycle.finish(attempt, outcome: .loaded(model, gates: [], detail: ""), durationMs: 5, graceSeconds: grace)
    }

    @Test func aFirstLoadGoesFromLoadingToServingAndRecordsWhatServed() throws {
        var lifecycle = Lifecycle(name: "m")
        #expect(lifecycle.phase == .absent)
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1) == .go)
        let attempt = lifecycle.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f1")
        #expect(attempt.versions == nil)  // the version policy chooses
        #expect(lifecycle.phase == .loading && lifecycle.isFirstLoading)
        let (result, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [1]), gates: [], detail: ""), durationMs: 5, graceSeconds: 60)
        #expect(try result.get().toVersions == [1])
        #expect(lifecycle.phase == .serving && lifecycle.served == Fake(versions: [1]))
        #expect(Self.events(actions) == ["load"])
        #expect(Self.persisted(actions)?.servedVersions == [1])
        #expect(Self.released(actions).isEmpty && lifecycle.turn == nil)
    }

    @Test func anAcceptedSwapKeepsTheOldVersionsWarmUntilItsGracePeriodEnds() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 2) == .go)
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        #expect(lifecycle.phase == .swapping && lifecycle.served == Fake(versions: [1]) && !lifecycle.isFirstLoading)
        let (result, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [2]), gates: [], detail: ""), durationMs: 5, graceSeconds: 30)
        let report = try? result.get()
        #expect(report?.fromVersions == [1] && report?.toVersions == [2])
        #expect(lifecycle.phase == .grace && lifecycle.warm == Fake(versions: [1]))
        #expect(Self.events(actions) == ["swap"])
        #expect(lifecycle.decisions.rollbackVersions == [1])
        guard case .expireWarm(let generation, let seconds)? = actions.first(where: { if case .expireWarm = $0 { true } else { false } }) else {
            Issue.record("no grace timer")
            return
        }
        #expect(seconds == 30)
        // A timer of an older generation does nothing; this one's ends the warm set.
        #expect(lifecycle.warmExpired(generation: generation - 1).isEmpty)
        #expect(Self.released(lifecycle.warmExpired(generation: generation)) == [[1]])
        #expect(lifecycle.phase == .serving && lifecycle.warm == nil)
    }

    @Test func withoutAGracePeriodTheReplacedVersionsGoAtOnce() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1, grace: 0)
        let (_, actions) = Self.load(&lifecycle, Fake(versions: [2]), ticket: 2, grace: 0)
        #expect(Self.released(actions) == [[1]] && lifecycle.phase == .serving)
    }

    @Test func aReloadOfTheSameVersionsKeepsTheRollbackTarget() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1, grace: 0)
        Self.load(&lifecycle, Fake(versions: [2]), ticket: 2, grace: 0)
        Self.load(&lifecycle, Fake(versions: [2], tag: "new files"), ticket: 3, grace: 0)
        #expect(lifecycle.decisions.rollbackVersions == [1])
    }

    @Test func aSwapThatFailsItsGatesLeavesTheServingVersionsAndRemembersTheRejection() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 2) == .go)
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        let gate = GateResult(name: "accuracy", passed: false, measured: 0.41, threshold: 0.9, detail: "accuracy 0.41")
        let (result, actions) = lifecycle.finish(
            attempt, outcome: .rejected(versions: [2], gates: [gate], message: "rejected by its gates"), durationMs: 5, graceSeconds: 60)
        guard case .failure(let error) = result else {
            Issue.record("a rejected swap must fail")
            return
        }
        #expect(error.code == .failedPrecondition)
        #expect(lifecycle.phase == .serving && lifecycle.served == Fake(versions: [1]))
        #expect(Self.released(actions).isEmpty)
        #expect(Self.events(actions) == ["swap_rejected"])
        #expect(lifecycle.decisions.rejectedVersions == [2] && lifecycle.decisions.servedVersions == [1])
        #expect(lifecycle.lastSwap?.accepted == false)
        #expect(Self.persisted(actions)?.rejectedFingerprint == Lifecycle.digest("f2"))
    }

    @Test func aFailedReloadKeepsServingAndAFailedFirstLoadIsUnavailable() throws {
        var lifecycle = Lifecycle(name: "m")
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1) == .go)
        var attempt = lifecycle.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f1")
        var (result, actions) = lifecycle.finish(attempt, outcome: .failed(.invalidArgument("bad config")), durationMs: 1, graceSeconds: 60)
        #expect(lifecycle.phase == .unavailable && lifecycle.reason == "bad config")
        #expect((try? result.get()) == nil && Self.events(actions) == ["load_failed"])
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 2)
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 3) == .go)
        attempt = lifecycle.beginLoad(ticket: 3, choice: .policy, gated: true, action: "load", fingerprint: "f2")
        (result, actions) = lifecycle.finish(attempt, outcome: .failed(.invalidArgument("broken file")), durationMs: 1, graceSeconds: 60)
        #expect(lifecycle.phase == .serving && lifecycle.served == Fake(versions: [1]))
        if case .failure(let error) = result { #expect(error.message == "failed to load 'm': broken file") }
    }

    @Test func aRollbackDuringTheGracePeriodIsInstantAndPins() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        Self.load(&lifecycle, Fake(versions: [3]), ticket: 2, choice: .pin([3]))
        #expect(lifecycle.decisions.pinnedVersions == [3])
        #expect(lifecycle.enqueue(.rollback, coalescible: true, ticket: 3) == .go)
        guard case .done(let result, let actions) = lifecycle.beginRollback(ticket: 3, fingerprint: "f") else {
            Issue.record("a warm rollback must not load")
            return
        }
        #expect(try result.get().toVersions == [1])
        #expect(lifecycle.served == Fake(versions: [1]) && lifecycle.phase == .serving)
        #expect(Self.released(actions) == [[3]] && Self.events(actions) == ["rollback"])
        #expect(lifecycle.decisions.pinnedVersions == [1] && lifecycle.decisions.rollbackVersions == [3])
        #expect(Self.persisted(actions)?.pinnedVersions == [1])
        #expect(lifecycle.turn == nil)
        // An old grace timer cannot touch the set served now.
        #expect(lifecycle.warmExpired(generation: 2).isEmpty && lifecycle.served == Fake(versions: [1]))
    }

    @Test func aRollbackAfterTheGracePeriodLoadsTheEarlierVersionsUngated() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1, grace: 0)
        Self.load(&lifecycle, Fake(versions: [2]), ticket: 2, grace: 0)
        #expect(lifecycle.enqueue(.rollback, coalescible: true, ticket: 3) == .go)
        guard case .load(let attempt) = lifecycle.beginRollback(ticket: 3, fingerprint: "f") else {
            Issue.record("a cold rollback must load")
            return
        }
        #expect(attempt.versions == [1] && !attempt.gated && attempt.action == "rollback")
        #expect(lifecycle.phase == .swapping)
        let (result, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [1]), gates: [], detail: ""), durationMs: 5, graceSeconds: 0)
        #expect(try result.get().toVersions == [1])
        #expect(Self.events(actions) == ["rollback"] && lifecycle.decisions.pinnedVersions == [1])
    }

    @Test func aRollbackWithNoEarlierVersionsIsRefusedAndPassesTheTurnOn() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.rollback, coalescible: true, ticket: 2) == .go)
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 3) == .queued)
        guard case .done(let result, let actions) = lifecycle.beginRollback(ticket: 2, fingerprint: "f") else {
            Issue.record("nothing to load")
            return
        }
        if case .failure(let error) = result { #expect(error.message.contains("no earlier versions")) } else { Issue.record("must fail") }
        #expect(Self.woken(actions) == [3])
    }

    @Test func aRollbackAskedDuringASwapWaitsAndThenUndoesThatSwap() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 2) == .go)
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        #expect(lifecycle.enqueue(.rollback, coalescible: true, ticket: 3) == .queued)
        let (_, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [2]), gates: [], detail: ""), durationMs: 5, graceSeconds: 60)
        #expect(Self.woken(actions) == [3])
        guard case .done(let result, _) = lifecycle.beginRollback(ticket: 3, fingerprint: "f2") else {
            Issue.record("version 1 is warm")
            return
        }
        #expect(try result.get().fromVersions == [2] && lifecycle.served == Fake(versions: [1]))
    }

    @Test func anUnloadDuringASwapAbandonsTheCandidateAndAnswersEveryWaitingCaller() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 2) == .go)
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 3) == .queued)
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 4) == .queued)
        let unloaded = lifecycle.unload(reason: "unloaded", action: "unload")
        #expect(Self.released(unloaded) == [[1]])
        #expect(Set(Self.resumed(unloaded)) == [3, 4])
        #expect(Self.events(unloaded) == ["unload"])
        // The abandoned load still runs, but no longer counts as loading (readiness, status).
        #expect(lifecycle.phase == .unavailable && lifecycle.served == nil && lifecycle.attempt?.abandoned != nil)
        // A load asked after the unload waits for the abandoned one, then runs.
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 5) == .queued)
        let (result, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [2]), gates: [], detail: ""), durationMs: 5, graceSeconds: 60)
        guard case .failure(let error) = result else {
            Issue.record("an abandoned load must not serve")
            return
        }
        #expect(error.code == .unavailable && error.message.contains("unloaded while it loaded"))
        #expect(Self.released(actions) == [[2]])
        #expect(lifecycle.phase == .unavailable && lifecycle.served == nil)
        #expect(Self.woken(actions) == [5])
    }

    @Test func anUnloadBeforeAGrantedLoadBeginsAbandonsIt() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        #expect(lifecycle.enqueue(.load(.policy, gated: true, action: "load"), coalescible: true, ticket: 2) == .go)
        _ = lifecycle.unload(reason: "unloaded", action: "unload")
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .policy, gated: true, action: "load", fingerprint: "f")
        #expect(attempt.abandoned != nil)
        let (result, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [1]), gates: [], detail: ""), durationMs: 1, graceSeconds: 0)
        #expect((try? result.get()) == nil && Self.released(actions) == [[1]])
        #expect(lifecycle.phase == .unavailable && lifecycle.served == nil)
    }

    @Test func aReloadStormCostsOneLoadBeyondTheRunningOne() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        let reload = Lifecycle.Request.load(.keepPin, gated: true, action: "load")
        #expect(lifecycle.enqueue(reload, coalescible: true, ticket: 10) == .go)
        let running = lifecycle.beginLoad(ticket: 10, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        for ticket in UInt64(11)...20 { #expect(lifecycle.enqueue(reload, coalescible: true, ticket: ticket) == .queued) }
        #expect(lifecycle.queue.count == 1 && lifecycle.queue[0].leader == 11 && lifecycle.queue[0].followers.count == 9)
        var (_, actions) = lifecycle.finish(running, outcome: .loaded(Fake(versions: [2]), gates: [], detail: ""), durationMs: 5, graceSeconds: 60)
        #expect(Self.woken(actions) == [11] && Self.resumed(actions).isEmpty)
        let second = lifecycle.beginLoad(ticket: 11, choice: .keepPin, gated: true, action: "load", fingerprint: "f3")
        (_, actions) = lifecycle.finish(second, outcome: .loaded(Fake(versions: [3]), gates: [], detail: ""), durationMs: 5, graceSeconds: 60)
        #expect(Self.resumed(actions) == Array(12...20))
        #expect(Self.released(actions) == [[1]])  // the older warm set goes when a newer one replaces it
        #expect(lifecycle.warm == Fake(versions: [2]) && lifecycle.served == Fake(versions: [3]) && lifecycle.turn == nil)
    }

    @Test func onlyEqualCoalescibleRequestsNextToEachOtherShareATurn() throws {
        var lifecycle = Lifecycle(name: "m")
        let a = Lifecycle.Request.load(.policy, gated: true, action: "load")
        let b = Lifecycle.Request.load(.pin([2]), gated: true, action: "promote")
        #expect(lifecycle.enqueue(a, coalescible: true, ticket: 1) == .go)
        _ = lifecycle.enqueue(a, coalescible: true, ticket: 2)
        _ = lifecycle.enqueue(a, coalescible: true, ticket: 3)
        _ = lifecycle.enqueue(b, coalescible: true, ticket: 4)
        _ = lifecycle.enqueue(a, coalescible: true, ticket: 5)
        _ = lifecycle.enqueue(a, coalescible: false, ticket: 6)
        _ = lifecycle.enqueue(a, coalescible: false, ticket: 7)
        #expect(lifecycle.queue.map(\.leader) == [2, 4, 5, 6, 7])
        #expect(lifecycle.queue[0].followers == [3])
    }

    @Test func restoredPinsChooseTheVersionsOfAStartupLoad() throws {
        var lifecycle = Lifecycle(name: "m", decisions: ModelDecisions(pinnedVersions: [1], rollbackVersions: [3], servedVersions: [1]))
        #expect(lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1) == .go)
        let attempt = lifecycle.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f")
        #expect(attempt.versions == [1])
        _ = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [1]), gates: [], detail: ""), durationMs: 1, graceSeconds: 60)
        // The rollback target survived too: a rollback loads version 3.
        #expect(lifecycle.enqueue(.rollback, coalescible: true, ticket: 2) == .go)
        guard case .load(let back) = lifecycle.beginRollback(ticket: 2, fingerprint: "f") else {
            Issue.record("version 3 is not loaded")
            return
        }
        #expect(back.versions == [3])
    }

    @Test func aStartupLoadDoesNotRetryWhatTheGatesRejectedFromTheSameFiles() throws {
        let decisions = ModelDecisions(servedVersions: [1], rejectedVersions: [2], rejectedFingerprint: Lifecycle.digest("f2"))
        var same = Lifecycle(name: "m", decisions: decisions)
        _ = same.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1)
        let restore = same.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        #expect(restore.versions == [1] && !restore.gated && restore.action == "restore")
        // Changed files: the version policy gets its chance again.
        var changed = Lifecycle(name: "m", decisions: decisions)
        _ = changed.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1)
        let fresh = changed.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f3")
        #expect(fresh.versions == nil && fresh.gated)
    }

    @Test func aRejectedFirstLoadAsksToRestoreWhatServedBefore() throws {
        var lifecycle = Lifecycle(name: "m", decisions: ModelDecisions(servedVersions: [1]))
        _ = lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 1)
        let attempt = lifecycle.beginLoad(ticket: 1, choice: .keepPin, gated: true, action: "load", fingerprint: "f")
        let (_, actions) = lifecycle.finish(attempt, outcome: .rejected(versions: [4], gates: [], message: "no"), durationMs: 1, graceSeconds: 60)
        #expect(lifecycle.phase == .unavailable)
        guard case .restore([1], let generation)? = actions.first(where: { if case .restore = $0 { true } else { false } }) else {
            Issue.record("no restore asked")
            return
        }
        // The restore runs only while nothing changed: here it begins normally...
        var unchanged = lifecycle
        _ = unchanged.enqueue(.load(.exactly([1]), gated: false, action: "restore"), coalescible: true, ticket: 2)
        let restore = unchanged.beginLoad(ticket: 2, choice: .exactly([1]), gated: false, action: "restore", fingerprint: "f", ifGeneration: generation)
        #expect(restore.abandoned == nil && restore.versions == [1] && unchanged.phase == .loading)
        // ...but after an unload it begins abandoned, does not count as loading, and serves nothing.
        _ = lifecycle.unload(reason: "unloaded", action: "unload")
        _ = lifecycle.enqueue(.load(.exactly([1]), gated: false, action: "restore"), coalescible: true, ticket: 3)
        let late = lifecycle.beginLoad(ticket: 3, choice: .exactly([1]), gated: false, action: "restore", fingerprint: "f", ifGeneration: generation)
        #expect(late.abandoned != nil && lifecycle.phase == .unavailable && !lifecycle.isLoading)
        let (result, after) = lifecycle.finish(late, outcome: .failed(.unavailable("skipped")), durationMs: 0, graceSeconds: 60)
        #expect((try? result.get()) == nil && lifecycle.served == nil && Self.events(after).isEmpty)
    }

    @Test func aLoadAbandonedByForgettingLeavesTheModelAbsentAndThenIdle() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1)
        _ = lifecycle.enqueue(.load(.keepPin, gated: true, action: "load"), coalescible: true, ticket: 2)
        let attempt = lifecycle.beginLoad(ticket: 2, choice: .keepPin, gated: true, action: "load", fingerprint: "f2")
        _ = lifecycle.unload(reason: "removed from the repository", action: "unload", forget: true)
        // Not loading any more as far as readiness and the repository poll are concerned.
        #expect(lifecycle.phase == .absent && !lifecycle.isFirstLoading && !lifecycle.isIdle)
        let (_, actions) = lifecycle.finish(attempt, outcome: .loaded(Fake(versions: [2]), gates: [], detail: ""), durationMs: 1, graceSeconds: 60)
        #expect(Self.released(actions) == [[2]] && lifecycle.isIdle)
    }

    @Test func forgettingAModelDropsItsDecisions() throws {
        var lifecycle = Lifecycle(name: "m")
        Self.load(&lifecycle, Fake(versions: [1]), ticket: 1, choice: .pin([1]))
        let actions = lifecycle.unload(reason: "removed from the repository", action: "unload", forget: true)
        #expect(lifecycle.phase == .absent && lifecycle.isIdle && lifecycle.decisions == ModelDecisions())
        #expect(actions.contains { if case .forget = $0 { true } else { false } })
    }
}
