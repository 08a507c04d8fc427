import Foundation
import Logging
import Synchronization
import TernCore

/// Loading and hot-swapping: a new set of versions loads beside the serving one, warms up, passes
/// its validation gates, and only then takes the traffic, in one pointer swap. Requests already
/// running (or queued) finish on the versions they started on; the old versions stay warm for a
/// grace period (`tern.swap.grace_seconds`, default 60) so a rollback is instant, and are then
/// released.
///
/// The decisions live in `ModelLifecycle`, a value each model has under the registry lock; the
/// methods here only perform what its transitions return (load off the concurrency pool, run the
/// gates, wake callers, write history) outside that lock.
extension InferenceServer {
    typealias Lifecycle = ModelLifecycle<LoadedModel>

    /// The registry: each model's lifecycle, and the callers waiting for a model's turn.
    struct Models: Sendable {
        var lifecycles: [String: Lifecycle] = [:]
        var waiting: [UInt64: CheckedContinuation<Wakeup, Never>] = [:]
        var nextTicket: UInt64 = 1
        /// Decisions read from the history at start, handed to a model's lifecycle when it is first seen.
        var restored: [String: ModelDecisions] = [:]

        /// The lifecycle of `name`, created (with its restored decisions) when first needed.
        mutating func lifecycle(_ name: String) -> Lifecycle {
            if let existing = lifecycles[name] { return existing }
            let created = Lifecycle(name: name, decisions: restored.removeValue(forKey: name) ?? ModelDecisions())
            lifecycles[name] = created
            return created
        }
    }

    /// How a waiting caller is resumed.
    enum Wakeup: Sendable {
        /// Its turn: it performs its request.
        case perform(UInt64)
        /// Another caller performed the same request; this is its result.
        case finished(Result<SwapReport, TernError>)
    }

    /// Hot-swaps `name` to `version` (pinning it), or back to the version policy's choice when
    /// `version` is nil; the new versions must pass the model's gates before they take traffic.
    @discardableResult
    public func promote(model name: String, version: Int64? = nil) async throws(TernError) -> SwapReport {
        try checkLifecycleAllowed()
        guard registry.withLock({ $0.lifecycles[name]?.served != nil }) else { throw Self.unknownModel(name) }
        return try await loadModel(name, configOverride: nil, versions: version.map { .pin([$0]) } ?? .policy, action: "promote")
    }

    /// Goes back to the versions served before the last swap (and pins them): at once when they
    /// are still warm, otherwise by loading them again (no gates: they served before). A rollback
    /// asked during a swap waits for the swap to end, then undoes the last swap that took place.
    @discardableResult
    public func rollback(model name: String) async throws(TernError) -> SwapReport {
        try checkLifecycleAllowed()
        guard registry.withLock({ $0.lifecycles[name] != nil }) else {
            throw TernError(.failedPrecondition, "cannot roll back '\(name)': no earlier versions were served")
        }
        let ticket: UInt64
        switch await takeTurn(name, .rollback, coalescible: true) {
        case .finished(let result): return try result.get()
        case .perform(let granted): ticket = granted
        }
        let fingerprint = repository.fingerprint(of: name)
        let start = registry.withLock { models in
            let start = models.lifecycles[name]!.beginRollback(ticket: ticket, fingerprint: fingerprint)
            // The books change with the state, under its lock (registry → books).
            if case .done(.success, _) = start { ledger.rolledBackToWarm(name) }
            return start
        }
        switch start {
        case .done(let result, let actions):
            perform(actions, model: name)
            if case .success(let report) = result {
                logger.notice("model rolled back", metadata: ["model": .string(name), "to_versions": .string("\(report.toVersions)")])
            }
            return try result.get()
        case .load(let attempt):
            return try await run(attempt, model: name, configOverride: nil, loader: loader)
        }
    }

    /// The lifecycle state of a model.
    public func lifecycleStatus(model name: String) throws(TernError) -> ModelLifecycleStatus {
        guard let lifecycle = registry.withLock({ $0.lifecycles[name] }), lifecycle.phase != .absent else { throw Self.unknownModel(name) }
        return ModelLifecycleStatus(
            model: name, state: Self.readiness(lifecycle.phase), phase: lifecycle.phase.rawValue,
            servingVersions: lifecycle.served?.versions ?? [], pinnedVersions: lifecycle.decisions.pinnedVersions,
            previousVersions: lifecycle.decisions.rollbackVersions, previousWarm: lifecycle.warm != nil,
            rejectedVersions: lifecycle.decisions.rejectedVersions, memoryBytes: ledger.holding(name), lastSwap: lifecycle.lastSwap)
    }

    /// The lifecycle state of every model the server has seen, by name.
    public func lifecycleStatuses() -> [ModelLifecycleStatus] {
        let names = registry.withLock { models in models.lifecycles.filter { $0.value.phase != .absent }.keys.sorted() }
        return names.compactMap { try? lifecycleStatus(model: $0) }
    }

    /// Triton's model states: READY while anything serves (a swap or grace period included).
    static func readiness(_ phase: Lifecycle.Phase) -> String {
        switch phase {
        case .loading: "LOADING"
        case .serving, .swapping, .grace: "READY"
        case .absent, .unavailable: "UNAVAILABLE"
        }
    }

    func checkLifecycleAllowed() throws(TernError) {
        guard configuration.controlMode != .none else {
            throw TernError(.failedPrecondition, "model changes are not allowed in model control mode 'none'; start with --model-control-mode explicit or poll")
        }
    }

    // MARK: Turns

    /// Waits for `name`'s turn for `request` (at once when nothing else loads it).
    func takeTurn(_ name: String, _ request: Lifecycle.Request, coalescible: Bool) async -> Wakeup {
        await withCheckedContinuation { (continuation: CheckedContinuation<Wakeup, Never>) in
            let granted: UInt64? = registry.withLock { models in
                let ticket = models.nextTicket
                models.nextTicket += 1
                var lifecycle = models.lifecycle(name)
                let admission = lifecycle.enqueue(request, coalescible: coalescible, ticket: ticket)
                models.lifecycles[name] = lifecycle
                if admission == .go { return ticket }
                models.waiting[ticket] = continuation
                return nil
            }
            if let granted { continuation.resume(returning: .perform(granted)) }
        }
    }

    /// Performs what a transition returned, outside the registry lock.
    func perform(_ actions: [LifecycleAction<LoadedModel>], model name: String) {
        for action in actions {
            switch action {
            case .release:
                break  // dropped with `actions`, here rather than under the lock
            case .wake(let ticket):
                registry.withLock { $0.waiting.removeValue(forKey: ticket) }?.resume(returning: .perform(ticket))
            case .resume(let tickets, let result):
                let continuations = registry.withLock { models in tickets.compactMap { models.waiting.removeValue(forKey: $0) } }
                for continuation in continuations { continuation.resume(returning: .finished(result)) }
            case .record(let event):
                history.record(event)
            case .persist, .forget:
                persistDecisions(of: name)
            case .expireWarm(let generation, let seconds):
                DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + seconds) { [weak self] in
                    guard let self else { return }
                    let expired = registry.withLock { models in
                        let expired = models.lifecycles[name]?.warmExpired(generation: generation) ?? []
                        if !expired.isEmpty { ledger.releaseWarm(name) }
                        return expired
                    }
                    perform(expired, model: name)
                }
            case .restore(let versions, let generation):
                logger.warning("the gates rejected the versions to load and nothing serves: restoring the versions served before",
                               metadata: ["model": .string(name), "versions": .string("\(versions)")])
                Task {
                    _ = try? await self.loadModel(
                        name, configOverride: nil, versions: .exactly(versions), gated: false, action: "restore", ifGeneration: generation)
                }
            }
        }
    }

    /// Writes `name`'s decisions as they stand now. Writes happen one at a time and each reads
    /// the current decisions under the writer's lock, so the last write is never older than the
    /// last transition, whatever order the threads performing the actions run in.
    func persistDecisions(of name: String) {
        decisionWriter.withLock { _ in
            let decisions = registry.withLock { $0.lifecycles[name]?.decisions } ?? ModelDecisions()
            history.save(decisions == ModelDecisions() ? nil : decisions, model: name)
        }
    }

    /// Drops `name`'s lifecycle when nothing is loaded, loading or waiting (a forgotten model).
    static func dropIfIdle(_ name: String, in models: inout Models) {
        if models.lifecycles[name]?.isIdle == true { models.lifecycles[name] = nil }
    }

    // MARK: Loading

    /// Loads `name` beside whatever serves it now, gates it, and swaps it in, in its turn.
    @discardableResult
    func loadModel(
        _ name: String, configOverride: ModelConfig?, loader: ModelLoader? = nil, versions choice: VersionChoice = .keepPin,
        gated: Bool = true, action: String = "load", ifGeneration: UInt64? = nil
    ) async throws(TernError) -> SwapReport {
        let request = Lifecycle.Request.load(choice, gated: gated, action: action)
        let ticket: UInt64
        switch await takeTurn(name, request, coalescible: configOverride == nil && loader == nil) {
        case .finished(let result): return try result.get()
        case .perform(let granted): ticket = granted
        }
        let fingerprint = repository.fingerprint(of: name)
        let attempt = registry.withLock {
            $0.lifecycles[name]!.beginLoad(
                ticket: ticket, choice: choice, gated: gated, action: action, fingerprint: fingerprint, ifGeneration: ifGeneration)
        }
        return try await run(attempt, model: name, configOverride: configOverride, loader: loader ?? self.loader)
    }

    /// Performs one load attempt (load, composing models, gates) and hands its outcome to the lifecycle.
    private func run(_ attempt: Lifecycle.Attempt, model name: String, configOverride: ModelConfig?, loader: ModelLoader) async throws(TernError) -> SwapReport {
        let started = ContinuousClock.now
        let serving = registry.withLock { $0.lifecycles[name]?.served }
        let estimate = loader.estimateBytes(name, configOverride: configOverride, versions: attempt.versions) ?? 0
        var reserved: MemoryEstimate = 0
        var holding: UInt64 = 0
        var grace = 0.0
        let outcome: Lifecycle.Outcome
        do throws(TernError) {
            if let why = attempt.abandoned { throw TernError.unavailable(why) }  // began abandoned: load nothing
            try admit(estimate, for: name)
            reserved = estimate
            let residentBefore = Self.residentBytes()
            let candidate = try await loader.load(name, configOverride: configOverride, versions: attempt.versions)
            var grown: UInt64 = 0
            if let after = Self.residentBytes(), let before = residentBefore, after > before { grown = after - before }
            guard !candidate.runners.isEmpty else {
                throw TernError.invalidArgument(candidate.failures.sorted { $0.key < $1.key }.map { "version \($0.key): \($0.value)" }.joined(separator: "; "))
            }
            await loadComposingModels(of: candidate.config, file: name)
            let gates = attempt.gated ? try await runGates(candidate, current: serving, grown: grown, loader: loader) : []
            let failed = gates.filter { !$0.passed }
            if failed.isEmpty {
                let detail = candidate.failures.isEmpty ? "" : "versions that failed to load: "
                    + candidate.failures.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
                holding = max(estimate.totalBytes, grown)
                grace = Self.graceSeconds(candidate.config)
                outcome = .loaded(candidate, gates: gates, detail: detail)
            } else {
                let toVersions = candidate.versions
                let from = attempt.fromVersions
                let keeps = from.isEmpty ? "nothing is served" : "version \(from.map(String.init).joined(separator: ", ")) keeps serving"
                let message = "hot-swap of '\(name)' to version \(toVersions.map(String.init).joined(separator: ", ")) rejected by its gates: "
                    + failed.map { "\($0.name): \($0.detail)" }.joined(separator: "; ") + "; \(keeps)"
                outcome = .rejected(versions: toVersions, gates: gates, message: message)
            }
        } catch {
            outcome = .failed(error)
        }
        let durationMs = Self.milliseconds(since: started)
        let (result, actions) = registry.withLock { models in
            let (result, actions) = models.lifecycles[name]!.finish(attempt, outcome: outcome, durationMs: durationMs, graceSeconds: grace)
            // The books change with the state, under its lock (registry → books).
            let accepted = (try? result.get()) != nil
            ledger.settle(name, reserved: reserved, holding: accepted ? holding : nil, keepsWarm: accepted && models.lifecycles[name]!.warm != nil)
            Self.dropIfIdle(name, in: &models)
            return (result, actions)
        }
        if case .success = result, case .loaded(let model, _, _) = outcome {
            // The device policy's batch scale, under its lock so a change racing this swap is
            // applied after it (setBatchScale holds the same lock while it scales every set).
            shaping.withLock { shaping in
                for runner in model.runners.values { runner.scaleBatches(shaping.batchScale) }
            }
        }
        perform(actions, model: name)
        switch result {
        case .success(let report):
            logger.info("model serving", metadata: [
                "model": .string(name), "versions": .string("\(report.toVersions)"), "from_versions": .string("\(report.fromVersions)"),
                "load_to_serving_ms": .string(String(format: "%.1f", durationMs)),
            ])
        case .failure(let error):
            logger.error("failed to load model", metadata: ["model": .string(name), "error": .string(error.message)])
        }
        return try result.get()
    }

    /// As Triton in explicit mode: loading an ensemble loads the composing models not loaded yet.
    /// Models already loading (nested ensembles that refer to each other) are left alone.
    private func loadComposingModels(of config: ModelConfig, file name: String) async {
        guard config.platform == "ensemble", configuration.controlMode == .explicit,
            let plan = try? EnsemblePlan(config: config, file: name)
        else { return }
        for model in plan.composingModels {
            let phase = registry.withLock { $0.lifecycles[model]?.phase }
            guard phase == nil || phase == .absent || phase == .unavailable else { continue }
            _ = try? await loadModel(model, configOverride: nil)
        }
    }

    /// The model's validation gates on the newest candidate version, against the serving one.
    private func runGates(_ candidate: LoadedModel, current: LoadedModel?, grown: UInt64, loader: ModelLoader) async throws(TernError) -> [GateResult] {
        let settings = try SwapGates(config: candidate.config)
        guard !settings.isEmpty, let newest = candidate.runners.keys.max().flatMap({ candidate.runners[$0] }) else { return [] }
        let serving = current.flatMap { model in model.runners.keys.max().flatMap { model.runners[$0] } }
        return await settings.run(candidate: newest, current: serving, grownBytes: grown, directory: loader.repository.modelDirectory(candidate.name))
    }

    /// `tern.swap.grace_seconds`: how long the replaced versions stay loaded for an instant rollback.
    static func graceSeconds(_ config: ModelConfig) -> Double {
        guard let text = config.parameters["tern.swap.grace_seconds"]?.stringValue, let value = Double(text), value >= 0 else { return 60 }
        return value
    }

    static func milliseconds(since start: ContinuousClock.Instant) -> Double {
        (ContinuousClock.now - start).milliseconds
    }
}

extension LoadedModel: LifecycleModel {
    var versions: [Int64] { runners.keys.sorted() }
}
