import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TernCore
import TernRuntime

/// Owns the experiments of a server: loads them from `<repository>/experiments/*.yaml` and from
/// the store, registers each as a virtual model with the engine, evaluates guardrails and canary
/// steps on a schedule (as a `Service`), and answers the API and CLI (create, list, status, stop,
/// promote, report, feedback).
public final class ExperimentManager: Service, Sendable {
    /// The engine the experiments are registered with as virtual models.
    public let engine: InferenceServer
    /// The batch writer that takes the experiments' records.
    public let recorder: ExperimentRecorder
    /// The metrics store the recorder writes to, where reports and feedback are read and written.
    public var store: ExperimentStore { recorder.store }
    let repositoryPath: URL?
    let logger: Logger
    private let experiments = Mutex<[String: Experiment]>([:])
    private let lastChecked = Mutex<[String: Double]>([:])
    private let lastRetention = Mutex(0.0)
    private let shadows: ShadowRunner

    /// Makes a manager for `engine` that records through `recorder` and reads experiment files under `repositoryPath`
    /// (none when nil).
    public init(engine: InferenceServer, recorder: ExperimentRecorder, repositoryPath: URL?, logger: Logger) {
        self.engine = engine
        self.recorder = recorder
        self.repositoryPath = repositoryPath
        self.logger = logger
        shadows = ShadowRunner(engine: engine)
        // Written records feed their experiment's counters and guardrail tallies.
        recorder.observe { [weak self] name, records in self?.experiment(name, orNil: true)?.absorb(records) }
    }

    // MARK: Loading

    /// Restores the experiments the store knows and reads the repository's experiment files (a
    /// file whose definition changed starts afresh; an unchanged one keeps its state). A broken
    /// file is logged and skipped; the others load.
    public func loadAll() {
        var saved: [String: (spec: String, state: String, source: String)] = [:]
        for row in (try? store.savedExperiments()) ?? [] { saved[row.name] = (row.spec, row.state, row.source) }
        var fromFiles = Set<String>()
        for (file, spec) in readFiles() {
            fromFiles.insert(spec.name)
            let previous = saved[spec.name]
            let state = previous.flatMap { previous in
                (try? ExperimentSpec.parse(previous.spec)) == spec ? try? JSONDecoder().decode(ExperimentState.self, from: Data(previous.state.utf8)) : nil
            }
            do {
                try install(spec, state: state, source: "file:" + file)
            } catch {
                logger.error("experiment not started", metadata: ["file": .string(file), "error": .string(error.message)])
            }
        }
        for (name, row) in saved where !fromFiles.contains(name) && row.source == "api" {
            do {
                let spec = try ExperimentSpec.parse(row.spec)
                let state = try? JSONDecoder().decode(ExperimentState.self, from: Data(row.state.utf8))
                try install(spec, state: state, source: "api")
            } catch {
                logger.error("stored experiment not restored", metadata: ["experiment": .string(name), "error": .string("\(error)")])
            }
        }
    }

    private func readFiles() -> [(String, ExperimentSpec)] {
        guard let folder = repositoryPath?.appendingPathComponent("experiments", isDirectory: true),
            let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path)
        else { return [] }
        return names.sorted().compactMap { file -> (String, ExperimentSpec)? in
            let url = folder.appendingPathComponent(file)
            guard ["yaml", "yml", "json"].contains(url.pathExtension), let text = try? String(contentsOf: url, encoding: .utf8) else { return nil }
            do {
                return (file, try ExperimentSpec.parse(text, defaultName: url.deletingPathExtension().lastPathComponent))
            } catch {
                logger.error("experiment file rejected", metadata: ["file": .string(file), "error": .string("\(error)")])
                return nil
            }
        }
    }

    private func install(_ spec: ExperimentSpec, state: ExperimentState?, source: String) throws(TernError) {
        let now = Date().timeIntervalSince1970
        let experiment = Experiment(
            spec: spec, state: state ?? ExperimentState(spec: spec, now: now), recorder: recorder, shadows: shadows, logger: logger)
        try engine.register(virtual: experiment)
        experiments.withLock { $0[spec.name] = experiment }
        persist(experiment, source: source)
        if state == nil { store.addEvent(spec.name, kind: "created", detail: "weights \(Self.describe(experiment.current.weights)) (\(source))") }
        logger.info("experiment running", metadata: ["experiment": .string(spec.name), "variants": .string(spec.variants.map(\.name).joined(separator: ","))])
    }

    private func persist(_ experiment: Experiment, source: String? = nil) {
        do {
            let spec = String(decoding: try JSONEncoder().encode(experiment.spec), as: UTF8.self)
            let state = String(decoding: try JSONEncoder().encode(experiment.current), as: UTF8.self)
            let origin = source ?? ((try? store.savedExperiments())?.first { $0.name == experiment.name }?.source ?? "api")
            try store.saveExperiment(name: experiment.name, spec: spec, state: state, source: origin)
        } catch {
            logger.error("cannot save the experiment", metadata: ["experiment": .string(experiment.name), "error": .string("\(error)")])
        }
    }

    static func describe(_ weights: [String: Double]) -> String {
        weights.keys.sorted().map { "\($0)=\(String(format: "%g", weights[$0]!))" }.joined(separator: " ")
    }

    // MARK: API

    /// Starts an experiment defined through the API. Its served variants' models must be ready.
    public func create(_ spec: ExperimentSpec) throws(TernError) {
        try spec.validate()
        if experiment(spec.name, orNil: true) != nil {
            throw TernError(.alreadyExists, "experiment '\(spec.name)' exists; stop and delete it first")
        }
        for variant in spec.variants where !engine.isModelReady(variant.model, version: variant.version) {
            throw TernError(.failedPrecondition, "experiment '\(spec.name)': variant '\(variant.name)' names model '\(variant.model)'\(variant.version.map { " version \($0)" } ?? "") which is not ready")
        }
        try install(spec, state: nil, source: "api")
    }

    /// Every experiment the manager runs, sorted by name.
    public var all: [Experiment] { experiments.withLock { $0.values.sorted { $0.name < $1.name } } }

    /// The experiment called `name`, or a not-found error.
    public func experiment(_ name: String) throws(TernError) -> Experiment {
        guard let experiment = experiment(name, orNil: true) else { throw .notFound("no experiment '\(name)'") }
        return experiment
    }

    private func experiment(_ name: String, orNil: Bool) -> Experiment? { experiments.withLock { $0[name] } }

    /// Stops splitting: every request goes to the control.
    @discardableResult
    public func stop(_ name: String, reason: String) throws(TernError) -> ExperimentState {
        let experiment = try experiment(name)
        let state = experiment.update { state in
            state.status = .stopped
            state.reason = reason
        }
        persist(experiment)
        store.addEvent(name, kind: "stopped", detail: reason)
        logger.warning("experiment stopped", metadata: ["experiment": .string(name), "reason": .string(reason)])
        return state
    }

    /// Removes an experiment (its name stops answering); its records stay in the store.
    public func delete(_ name: String) throws(TernError) {
        _ = try experiment(name)
        engine.unregister(virtual: name)
        experiments.withLock { $0[name] = nil }
        try? store.deleteExperiment(name)
        store.addEvent(name, kind: "deleted", detail: "")
    }

    /// Makes `variant` (default: the best served variant by accuracy, else by error rate) the
    /// answer to every request. When the variants are versions of one model, the winner's version
    /// is also promoted through the engine's hot-swap, so the model itself serves it.
    public func promote(_ name: String, variant chosen: String?) async throws(TernError) -> ExperimentState {
        let experiment = try experiment(name)
        let spec = experiment.spec
        let winner: VariantSpec
        if let chosen {
            guard let found = spec.variants.first(where: { $0.name == chosen }) else {
                throw .invalidArgument("experiment '\(name)' has no variant '\(chosen)'")
            }
            winner = found
        } else {
            let report = try report(name)
            let candidates = report.variants.filter { !$0.shadow && $0.requests > 0 }
            let best = candidates.max { a, b in
                if let x = a.accuracy, let y = b.accuracy, x != y { return x < y }
                return (a.errorRate ?? 1) > (b.errorRate ?? 1)
            }
            guard let best, let found = spec.variants.first(where: { $0.name == best.name }) else {
                throw TernError(.failedPrecondition, "experiment '\(name)' has no data to choose a winner; name the variant")
            }
            winner = found
        }
        var detail = "winner \(winner.name) (\(winner.model)\(winner.version.map { " v\($0)" } ?? ""))"
        let models = Set(spec.variants.map(\.model))
        if models.count == 1, let version = winner.version {
            do {
                let swap = try await engine.promote(model: winner.model, version: version)
                detail += "; model \(winner.model) now serves versions \(swap.toVersions)"
            } catch {
                // The experiment still sends everything to the winner; the model itself keeps its
                // versions (e.g. control mode none forbids model changes, or a gate refused).
                detail += "; model \(winner.model) not swapped: \(error.message)"
            }
        }
        let state = experiment.update { state in
            state.status = .promoted
            state.winner = winner.name
            state.reason = detail
        }
        persist(experiment)
        store.addEvent(name, kind: "promoted", detail: detail)
        logger.info("experiment promoted", metadata: ["experiment": .string(name), "detail": .string(detail)])
        return state
    }

    /// What the periodic guardrail check judges: the experiment's in-memory tallies (counts,
    /// errors and the newest latencies since this server started) and the labelled counts.
    func guardrailReport(_ experiment: Experiment) -> ExperimentReport {
        let labelled = (try? store.labelledCounts(experiment: experiment.name)) ?? [:]
        let (all, recent) = experiment.tallyData(labelled: labelled)
        return ExperimentReport.make(spec: experiment.spec, state: experiment.current, data: all, sampleRatioData: recent, events: [])
    }

    /// The experiment's analysis, from everything recorded since it started.
    public func report(_ name: String) throws(TernError) -> ExperimentReport {
        let experiment = try experiment(name)
        recorder.flush()
        let state = experiment.current
        do {
            let data = try store.variantData(experiment: name)
            let recent = try store.variantData(experiment: name, since: state.weightsSince, latencyWindow: 0)
            return ExperimentReport.make(spec: experiment.spec, state: state, data: data, sampleRatioData: recent, events: store.events(experiment: name))
        } catch {
            throw .internalError("cannot read the experiment's records: \(error)", cause: error)
        }
    }

    /// Ground-truth labels for request ids. Returns how many ids an experiment had routed.
    @discardableResult
    public func feedback(_ labels: [(requestID: String, label: String)]) throws(TernError) -> Int {
        recorder.flush()
        do {
            return try store.addFeedback(labels)
        } catch {
            throw .internalError("cannot store feedback: \(error)", cause: error)
        }
    }

    // MARK: Guardrails and canaries

    /// Evaluates every running experiment whose check interval has passed: a failing guardrail
    /// stops it (a canary counts failures up to its threshold, then rolls back); a canary that
    /// holds steps its weight up, and is promoted after holding at its maximum weight.
    public func evaluate(now: Double = Date().timeIntervalSince1970) async {
        if now - lastRetention.withLock({ $0 }) >= 60 {
            lastRetention.withLock { $0 = now }
            for experiment in all {
                guard let retention = experiment.spec.retention else { continue }
                try? store.enforceRetention(experiment: experiment.name, maxRows: retention.maxRows, maxDays: retention.maxDays)
            }
        }
        for experiment in all where experiment.current.status == .running {
            let spec = experiment.spec
            let rules = spec.guardrails ?? GuardrailSpec()
            let interval = spec.canary.map { min($0.intervalSeconds, rules.checkIntervalSeconds) } ?? rules.checkIntervalSeconds
            let due = lastChecked.withLock { checked in
                guard now - (checked[spec.name] ?? 0) >= interval else { return false }
                checked[spec.name] = now
                return true
            }
            guard due else { continue }
            let report = guardrailReport(experiment)
            if let canary = spec.canary {
                await step(canary: canary, experiment, report: report, now: now)
            } else if report.verdict.outcome == .failing {
                _ = try? stop(spec.name, reason: "guardrail: " + report.verdict.reasons.joined(separator: "; "))
            }
        }
    }

    private func step(canary: CanarySpec, _ experiment: Experiment, report: ExperimentReport, now: Double) async {
        let spec = experiment.spec
        let stable = spec.served[0].name, candidate = spec.served[1].name
        if report.verdict.outcome == .failing {
            let state = experiment.update { $0.canaryFailures += 1 }
            store.addEvent(spec.name, kind: "canary_check_failed", detail: report.verdict.reasons.joined(separator: "; "))
            if state.canaryFailures >= canary.threshold {
                _ = experiment.update { state in
                    state.weights[candidate] = 0
                    state.weights[stable] = 100
                }
                _ = try? stop(spec.name, reason: "canary rolled back: " + report.verdict.reasons.joined(separator: "; "))
            } else {
                persist(experiment)
            }
            return
        }
        let state = experiment.current
        guard report.verdict.outcome == .holding, now - state.lastCanaryStep >= canary.intervalSeconds else { return }
        let weight = state.weights[candidate] ?? 0
        if weight >= canary.maxWeight {
            _ = try? await promote(spec.name, variant: candidate)
            return
        }
        let next = min(weight + canary.stepWeight, canary.maxWeight)
        _ = experiment.update { state in
            state.weights[candidate] = next
            state.weights[stable] = 100 - next
            state.lastCanaryStep = now
        }
        persist(experiment)
        store.addEvent(spec.name, kind: "canary_step", detail: "\(candidate) weight \(String(format: "%g", weight)) → \(String(format: "%g", next))")
    }

    /// Starts the record writer and the shadow thread, evaluates once a second until shutdown,
    /// then writes the buffered records.
    public func run() async throws {
        recorder.start()
        shadows.start()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            await evaluate()
        }
        shadows.stop()
        recorder.shutdown()
    }
}
