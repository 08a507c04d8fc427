import Foundation
import Logging
import Synchronization
import TernCore

/// Loading and hot-swapping: a new set of versions loads beside the serving one, warms up, passes
/// its validation gates, and only then takes the traffic, in one pointer swap. Requests already
/// running (or queued) finish on the versions they started on; the old versions stay warm for a
/// grace period (`tern.swap.grace_seconds`, default 60) so a rollback is instant, and are then
/// released.
extension InferenceServer {
    /// Which versions a load serves.
    enum VersionChoice {
        /// Keep a pin set by promote/rollback; otherwise the version policy.
        case keepPin
        /// Back to the version policy (a plain load request clears pins).
        case policy
        case pin([Int64])
    }

    /// Hot-swaps `name` to `version` (pinning it), or back to the version policy's choice when
    /// `version` is nil; the new versions must pass the model's gates before they take traffic.
    @discardableResult
    public func promote(model name: String, version: Int64? = nil) async throws(TernError) -> SwapReport {
        try checkLifecycleAllowed()
        guard registry.withLock({ $0[name]?.loaded != nil }) else { throw Self.unknownModel(name) }
        return try await loadModel(name, configOverride: nil, versions: version.map { .pin([$0]) } ?? .policy, action: "promote")
    }

    /// Goes back to the versions served before the last swap (and pins them): at once when they
    /// are still warm, otherwise by loading them again (no gates: they served before).
    @discardableResult
    public func rollback(model name: String) async throws(TernError) -> SwapReport {
        try checkLifecycleAllowed()
        let started = ContinuousClock.now
        let swapped: SwapReport? = registry.withLock { records in
            guard var record = records[name], let current = record.loaded, let previous = record.previous else { return nil }
            let from = current.runners.keys.sorted()
            let to = previous.runners.keys.sorted()
            record.loaded = previous
            record.previous = nil
            record.previousVersions = from
            record.pinned = to
            record.generation += 1
            record.state = .ready
            let report = SwapReport(model: name, fromVersions: from, toVersions: to, accepted: true, gates: [],
                                    durationMs: Self.milliseconds(since: started), detail: "rolled back to the warm previous versions")
            record.lastSwap = report
            records[name] = record
            return report
        }
        if let swapped {
            history.record(LifecycleEvent(model: name, action: "rollback", fromVersions: swapped.fromVersions, toVersions: swapped.toVersions,
                                          durationMs: swapped.durationMs, detail: swapped.detail))
            logger.notice("model rolled back", metadata: ["model": .string(name), "to_versions": .string("\(swapped.toVersions)")])
            return swapped
        }
        let previousVersions = registry.withLock { $0[name]?.previousVersions ?? [] }
        guard !previousVersions.isEmpty else {
            throw TernError(.failedPrecondition, "cannot roll back '\(name)': no earlier versions were served since the server started")
        }
        return try await loadModel(name, configOverride: nil, versions: .pin(previousVersions), gated: false, action: "rollback")
    }

    /// The lifecycle state of a model.
    public func lifecycleStatus(model name: String) throws(TernError) -> ModelLifecycleStatus {
        guard let record = registry.withLock({ $0[name] }) else { throw Self.unknownModel(name) }
        return ModelLifecycleStatus(
            model: name, state: record.state.rawValue, servingVersions: record.loaded?.runners.keys.sorted() ?? [],
            pinnedVersions: record.pinned, previousVersions: record.previousVersions, previousWarm: record.previous != nil,
            memoryBytes: ledger.holding(name), lastSwap: record.lastSwap)
    }

    func checkLifecycleAllowed() throws(TernError) {
        guard configuration.controlMode != .none else {
            throw TernError(.failedPrecondition, "model changes are not allowed in model control mode 'none'; start with --model-control-mode explicit or poll")
        }
    }

    // MARK: Loading

    /// Loads `name` beside whatever serves it now, gates it, and swaps it in.
    @discardableResult
    func loadModel(
        _ name: String, configOverride: ModelConfig?, loader: ModelLoader? = nil, versions choice: VersionChoice = .keepPin,
        gated: Bool = true, action: String = "load"
    ) async throws(TernError) -> SwapReport {
        let started = ContinuousClock.now
        let (pinned, serving) = registry.withLock { records -> ([Int64]?, LoadedModel?) in
            if records[name] == nil { records[name] = ModelRecord(state: .loading) }
            let record = records[name]!
            switch choice {
            case .keepPin: return (record.pinned, record.loaded)
            case .policy: return (nil, record.loaded)
            case .pin(let versions): return (versions, record.loaded)
            }
        }
        let fromVersions = serving?.runners.keys.sorted() ?? []
        let fingerprint = repository.fingerprint(of: name)
        let loader = loader ?? self.loader
        let estimate = loader.estimateBytes(name, configOverride: configOverride, versions: pinned) ?? 0

        func fail(_ error: TernError, gates: [GateResult] = [], candidate: [Int64]? = nil) -> TernError {
            logger.error("failed to load model", metadata: ["model": .string(name), "error": .string(error.message)])
            registry.withLock { records in
                // A failed load or a rejected swap leaves a serving model in place.
                if let current = records[name], current.loaded != nil, current.state == .ready {
                    records[name]?.fingerprint = fingerprint
                    return
                }
                records[name] = ModelRecord(state: .unavailable, reason: error.message, fingerprint: fingerprint)
            }
            let rejected = !gates.isEmpty
            history.record(LifecycleEvent(
                model: name, action: rejected ? "swap_rejected" : "load_failed", fromVersions: fromVersions,
                toVersions: candidate ?? pinned ?? [], gates: gates, durationMs: Self.milliseconds(since: started), detail: error.message))
            return TernError(error.code, rejected ? error.message : "failed to load '\(name)': \(error.message)")
        }

        // Load beside the serving versions, off the Swift concurrency pool (session creation blocks).
        let candidate: LoadedModel
        var grown: UInt64 = 0
        do throws(TernError) {
            try admit(estimate, for: name)
            let residentBefore = Self.residentBytes()
            let result: Result<LoadedModel, TernError> = await withCheckedContinuation { continuation in
                DispatchQueue.global(qos: .userInitiated).async {
                    continuation.resume(returning: Result { () throws(TernError) in try loader.load(name, configOverride: configOverride, versions: pinned) })
                }
            }
            if let after = Self.residentBytes(), let before = residentBefore, after > before { grown = after - before }
            candidate = try result.get()
            guard !candidate.runners.isEmpty else {
                throw TernError.invalidArgument(candidate.failures.sorted { $0.key < $1.key }.map { "version \($0.key): \($0.value)" }.joined(separator: "; "))
            }
        } catch {
            ledger.settle(name, reserved: estimate, holding: nil)
            throw fail(error)
        }
        let toVersions = candidate.runners.keys.sorted()
        if candidate.config.platform == "ensemble", configuration.controlMode == .explicit {
            // As Triton: loading an ensemble loads the composing models that are not loaded yet.
            if let plan = try? EnsemblePlan(config: candidate.config, file: name) {
                // Models already loading (nested ensembles that refer to each other) are left alone.
                for model in plan.composingModels where registry.withLock({ $0[model] == nil || $0[model]?.state == .unavailable }) {
                    _ = try? await loadModel(model, configOverride: nil)
                }
            }
        }

        // Gates, before any traffic moves.
        var gates: [GateResult] = []
        if gated {
            do throws(TernError) {
                let settings = try SwapGates(config: candidate.config)
                if !settings.isEmpty {
                    let newest = candidate.runners[toVersions.last!]!
                    let current = serving.flatMap { model in model.runners.keys.max().flatMap { model.runners[$0] } }
                    gates = await settings.run(candidate: newest, current: current, grownBytes: grown, directory: loader.repository.modelDirectory(name))
                }
            } catch {
                ledger.settle(name, reserved: estimate, holding: nil)
                throw fail(error)
            }
            let failed = gates.filter { !$0.passed }
            if !failed.isEmpty {
                ledger.settle(name, reserved: estimate, holding: nil)
                let keeps = fromVersions.isEmpty ? "nothing is served" : "version \(fromVersions.map(String.init).joined(separator: ", ")) keeps serving"
                let message = "hot-swap of '\(name)' to version \(toVersions.map(String.init).joined(separator: ", ")) rejected by its gates: "
                    + failed.map { "\($0.name): \($0.detail)" }.joined(separator: "; ") + "; \(keeps)"
                let report = SwapReport(model: name, fromVersions: fromVersions, toVersions: toVersions, accepted: false, gates: gates,
                                        durationMs: Self.milliseconds(since: started), detail: message)
                registry.withLock { $0[name]?.lastSwap = report }
                throw fail(TernError(.failedPrecondition, message), gates: gates, candidate: toVersions)
            }
        }

        // The swap: one pointer change under the registry lock.
        ledger.settle(name, reserved: estimate, holding: max(estimate, grown))
        let scale = shaping.withLock { $0.batchScale }
        if scale < 1 { for runner in candidate.runners.values { runner.scaleBatches(scale) } }
        let durationMs = Self.milliseconds(since: started)
        let report = SwapReport(
            model: name, fromVersions: fromVersions, toVersions: toVersions, accepted: true, gates: gates, durationMs: durationMs,
            detail: candidate.failures.isEmpty ? "" : "versions that failed to load: " + candidate.failures.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
        let grace = Self.graceSeconds(candidate.config)
        let generation: UInt64 = registry.withLock { records in
            var record = records[name] ?? ModelRecord(state: .ready)
            let old = record.state == .ready ? record.loaded : nil
            record.state = .ready
            record.reason = ""
            record.loaded = candidate
            record.fingerprint = fingerprint
            record.generation += 1
            record.lastSwap = report
            switch choice {
            case .keepPin: break
            case .policy: record.pinned = nil
            case .pin(let versions): record.pinned = versions
            }
            if let old {
                record.previousVersions = old.runners.keys.sorted()
                record.previous = grace > 0 ? old : nil
            }
            records[name] = record
            return record.generation
        }
        history.record(LifecycleEvent(
            model: name, action: serving == nil ? action : (action == "load" ? "swap" : action), fromVersions: fromVersions,
            toVersions: toVersions, gates: gates, durationMs: durationMs, detail: report.detail))
        logger.info("model serving", metadata: [
            "model": .string(name), "versions": .string("\(toVersions)"), "from_versions": .string("\(fromVersions)"),
            "load_to_serving_ms": .string(String(format: "%.1f", durationMs)),
        ])
        if serving != nil, grace > 0 {
            // Dropping the last reference frees the old versions (LoadedModel.release trims).
            DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + grace) { [self] in
                registry.withLock { records in
                    if records[name]?.generation == generation { records[name]?.previous = nil }
                }
            }
        }
        return report
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
