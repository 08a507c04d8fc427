import Foundation
import TernCore
import TernTraining

/// One round as the coordinator records it: who was asked, who answered, why the others did not
/// count, and the aggregated metrics.
public struct FLRoundRecord: Sendable, Codable, Equatable {
    /// The round, from 1.
    public var round: Int
    /// The clients asked to fit.
    public var fitClients: [String] = []
    /// How many fit answers were aggregated.
    public var fitResults = 0
    /// Each fit failure: client and reason.
    public var fitFailures: [String: FLFailureReason] = [:]
    /// Whether the global weights changed this round.
    public var aggregated = false
    /// Why they did not, when they did not.
    public var aggregationNote: String?
    /// Numeric fit metrics, averaged over clients weighted by their example counts.
    public var fitMetrics: [String: Double] = [:]
    /// The clients asked to evaluate.
    public var evaluateClients: [String] = []
    /// How many evaluation answers counted.
    public var evaluateResults = 0
    /// Each evaluation failure: client and reason.
    public var evaluateFailures: [String: FLFailureReason] = [:]
    /// The clients' losses averaged by example count (Flower's `losses_distributed`).
    public var loss: Double?
    /// Numeric evaluation metrics averaged by example count (e.g. `accuracy`).
    public var metrics: [String: Double] = [:]
    /// With differential privacy: the ε spent by the run so far, at the configured δ.
    public var epsilon: Double?
    /// With edge-aware selection: the devices that sat the round out, and why.
    public var skipped: [String: EdgeSelection.Skip] = [:]

    /// An empty record of round `round`.
    public init(round: Int) { self.round = round }
}

/// Everything a restarted coordinator needs to go on after its last completed round.
public struct FLCheckpoint: Sendable, Equatable {
    /// The last completed round.
    public var round: Int
    /// The global weights after it.
    public var weights: FLWeights
    /// The strategy's state after it.
    public var strategyState: FLStrategyState
    /// The privacy spent so far.
    public var accountant: RDPAccountant
    /// The records of rounds 1...round.
    public var history: [FLRoundRecord]

    /// A checkpoint with these parts.
    public init(round: Int, weights: FLWeights, strategyState: FLStrategyState, accountant: RDPAccountant, history: [FLRoundRecord]) {
        self.round = round
        self.weights = weights
        self.strategyState = strategyState
        self.accountant = accountant
        self.history = history
    }
}

/// The coordinator's rounds as a state machine without I/O or clocks: events in (a client joined
/// or left, an answer came, a deadline passed), actions out (send this instruction, start that
/// deadline, a round completed, the run finished). The owner applies the actions; the tests drive
/// it directly. Sample → fit → aggregate → evaluate → next, with Flower's knobs.
public struct RoundEngine: Sendable {
    /// The stages of a round.
    public enum Stage: String, Sendable, Codable {
        /// Devices report their condition (only with edge-aware selection).
        case properties
        /// One client is asked for the initial weights.
        case parameters
        /// Clients train on the global weights.
        case fit
        /// Clients evaluate the new global weights.
        case evaluate
    }

    /// What the owner must do.
    public enum Action: Sendable {
        /// Ask `client` for its weights (the initial model, as Flower does without one).
        case getParameters(client: String)
        /// Ask `client` for its device properties (edge-aware selection).
        case getProperties(client: String)
        /// Call `retryDue(round:)` after `seconds`: too few devices qualified for round `round`.
        case retryLater(round: Int, seconds: Double)
        /// Ask `client` to train on `weights` with `config`.
        case fit(client: String, round: Int, weights: FLWeights, config: [String: FLScalar])
        /// Ask `client` to evaluate `weights` with `config`.
        case evaluate(client: String, round: Int, weights: FLWeights, config: [String: FLScalar])
        /// Call `deadlinePassed(round:stage:)` after `seconds` unless the stage ends first.
        case startDeadline(round: Int, stage: Stage, seconds: Double)
        /// A stage began with these clients.
        case stageStarted(round: Int, stage: Stage, clients: [String])
        /// A round ended; the new global weights are `weights`.
        case roundCompleted(FLRoundRecord, weights: FLWeights)
        /// The last round ended: tell every client to disconnect.
        case finished(weights: FLWeights)
        /// Tell `client` to disconnect (`ReconnectIns{seconds: 0}`).
        case disconnect(client: String)
    }

    private enum Next: Sendable, Equatable {
        case initial, fit(Int), evaluate(Int), retry(Int)
    }

    private struct Probe: Sendable {
        var round: Int
        var pending: Set<String>
        var reports: [String: DeviceCondition] = [:]
    }

    private struct StageState: Sendable {
        var round: Int
        var stage: Stage
        var pending: Set<String>
        var fits: [FitResult] = []
        var evaluations: [EvaluateResult] = []
        var failures: [String: FLFailureReason] = [:]
    }

    private enum Phase: Sendable {
        case waiting(Next)
        case initializing(client: String)
        case probing(Probe)
        case running(StageState)
        case finished
    }

    /// The knobs.
    public let settings: FLSettings
    /// The global weights (empty until the initial ones are known).
    public private(set) var weights: FLWeights
    /// The records of the rounds completed so far.
    public private(set) var history: [FLRoundRecord] = []
    /// Connected clients, in the order they joined.
    public private(set) var available: [String] = []
    private var strategy: FLStrategy
    private let fitConfigs: [[String: FLScalar]]
    private let evaluateConfigs: [[String: FLScalar]]
    private var phase: Phase
    private var record: FLRoundRecord
    private var askedForParameters: Set<String> = []
    /// The privacy spent so far (counted only with differential privacy on).
    public private(set) var accountant = RDPAccountant()
    private var population = 0

    /// An engine for `settings`, starting from `initialWeights` (empty: ask a client) at round
    /// `firstRound` (a resumed run starts after its last checkpoint). The per-round configs are
    /// computed here, so an expression that fails for some round fails before any client joins.
    public init(settings: FLSettings, initialWeights: FLWeights = [], firstRound: Int = 1) throws(TernError) {
        try settings.validate()
        self.settings = settings
        self.weights = initialWeights
        self.strategy = try FLStrategy(settings.strategy, options: settings.strategyOptions)
        var fit: [[String: FLScalar]] = []
        var evaluate: [[String: FLScalar]] = []
        for round in 1...settings.rounds {
            var config: [String: FLScalar] = strategy.fitConfig
            for (key, value) in settings.fitConfig { config[key] = try value.value(round: round) }
            fit.append(config)
            var evalConfig: [String: FLScalar] = [:]
            for (key, value) in settings.evaluateConfig { evalConfig[key] = try value.value(round: round) }
            evaluate.append(evalConfig)
        }
        self.fitConfigs = fit
        self.evaluateConfigs = evaluate
        let start = max(1, firstRound)
        self.phase = start > settings.rounds ? .finished : .waiting(initialWeights.isEmpty ? .initial : .fit(start))
        self.record = FLRoundRecord(round: start)
    }

    /// An engine that goes on after `checkpoint` (a restarted coordinator): the next round is the
    /// one after the checkpoint's, with its weights, strategy state, privacy spent and history.
    public init(settings: FLSettings, resuming checkpoint: FLCheckpoint) throws(TernError) {
        try self.init(settings: settings, initialWeights: checkpoint.weights, firstRound: checkpoint.round + 1)
        strategy.state = checkpoint.strategyState
        accountant = checkpoint.accountant
        history = checkpoint.history
    }

    /// The state after the last completed round, for `init(settings:resuming:)`.
    public var checkpoint: FLCheckpoint {
        FLCheckpoint(round: history.last?.round ?? 0, weights: weights, strategyState: strategy.state, accountant: accountant, history: history)
    }

    /// Whether the last round has ended.
    public var isFinished: Bool {
        if case .finished = phase { return true }
        return false
    }

    /// The round in progress (or next to start).
    public var currentRound: Int { record.round }

    /// The config sent with round `round`'s fit instructions.
    public func fitConfig(round: Int) -> [String: FLScalar] { fitConfigs[min(max(round, 1), fitConfigs.count) - 1] }

    // MARK: Events

    /// A client connected.
    public mutating func clientJoined(_ client: String) -> [Action] {
        guard !available.contains(client) else { return [] }
        available.append(client)
        if isFinished { return [.disconnect(client: client)] }
        return advance()
    }

    /// A client's stream ended; an answer it owed counts as a `disconnected` failure.
    public mutating func clientLeft(_ client: String) -> [Action] {
        available.removeAll { $0 == client }
        switch phase {
        case .initializing(let asked) where asked == client:
            phase = .waiting(.initial)
            return advance()
        case .running(var state) where state.pending.contains(client):
            state.pending.remove(client)
            state.failures[client] = .disconnected
            return settle(state)
        case .probing(var probe) where probe.pending.contains(client):
            probe.pending.remove(client)
            return settleProbe(probe)
        default:
            return []
        }
    }

    /// A device's `get_properties` answer (nil: it did not answer usefully, which counts as neutral).
    public mutating func propertiesReturned(from client: String, _ properties: [String: FLScalar]?) -> [Action] {
        guard case .probing(var probe) = phase, probe.pending.remove(client) != nil else { return [] }
        probe.reports[client] = DeviceCondition(properties: properties ?? [:])
        return settleProbe(probe)
    }

    /// The wait after too few devices qualified is over: ask them again.
    public mutating func retryDue(round: Int) -> [Action] {
        guard case .waiting(.retry(let waiting)) = phase, waiting == round else { return [] }
        phase = .waiting(.fit(round))
        return advance()
    }

    /// The answer to `getParameters`: the weights, or why there are none.
    public mutating func parametersReturned(from client: String, _ outcome: Result<FLWeights, FLFailureReason>) -> [Action] {
        guard case .initializing(let asked) = phase, asked == client else { return [] }
        askedForParameters.insert(client)
        switch outcome {
        case .success(let initial) where !initial.isEmpty:
            weights = initial
            phase = .waiting(.fit(record.round))
        default:
            phase = .waiting(.initial)
        }
        return advance()
    }

    /// A fit answer for round `round`; late answers (the stage ended) are ignored.
    public mutating func fitReturned(from client: String, round: Int, _ outcome: Result<FitResult, FLFailureReason>) -> [Action] {
        guard case .running(var state) = phase, state.stage == .fit, state.round == round, state.pending.remove(client) != nil else { return [] }
        switch outcome {
        case .success(var result):
            if result.weights.layoutMismatch(expected: weights) != nil || result.numExamples < 0 {
                state.failures[client] = .badParameters
            } else {
                // The global model keeps its element types, whatever a client sent them as.
                result.weights = zip(result.weights, weights).map { $0.converted(to: $1.dataType) }
                state.fits.append(result)
            }
        case .failure(let reason):
            state.failures[client] = reason
        }
        return settle(state)
    }

    /// An evaluation answer for round `round`; late answers are ignored.
    public mutating func evaluateReturned(from client: String, round: Int, _ outcome: Result<EvaluateResult, FLFailureReason>) -> [Action] {
        guard case .running(var state) = phase, state.stage == .evaluate, state.round == round, state.pending.remove(client) != nil else { return [] }
        switch outcome {
        case .success(let result): state.evaluations.append(result)
        case .failure(let reason): state.failures[client] = reason
        }
        return settle(state)
    }

    /// The deadline of a stage passed: clients that have not answered count as `timeout`.
    public mutating func deadlinePassed(round: Int, stage: Stage) -> [Action] {
        if stage == .parameters, case .initializing(let client) = phase, round == askedForParameters.count {
            askedForParameters.insert(client)  // it did not answer in time: ask another
            phase = .waiting(.initial)
            return advance()
        }
        if stage == .properties, case .probing(var probe) = phase, probe.round == round, !probe.pending.isEmpty {
            for client in probe.pending { probe.reports[client] = DeviceCondition(properties: [:]) }
            probe.pending.removeAll()
            return settleProbe(probe)
        }
        guard case .running(var state) = phase, state.round == round, state.stage == stage, !state.pending.isEmpty else { return [] }
        for client in state.pending { state.failures[client] = .timeout }
        state.pending.removeAll()
        return settle(state)
    }

    // MARK: Transitions

    private mutating func advance() -> [Action] {
        guard case .waiting(let next) = phase else { return [] }
        switch next {
        case .initial:
            guard let client = available.first(where: { !askedForParameters.contains($0) }) else { return [] }
            phase = .initializing(client: client)
            // The deadline's "round" is the number of clients asked before, so an old timer cannot cut this ask short.
            let attempt = askedForParameters.count
            return [.getParameters(client: client)] + (settings.roundTimeout.map { [.startDeadline(round: attempt, stage: .parameters, seconds: $0)] } ?? [])
        case .retry:
            return []
        case .fit(let round):
            guard available.count >= settings.minAvailableClients, available.count >= settings.minFitClients else { return [] }
            record = FLRoundRecord(round: round)
            if settings.selection != nil {
                phase = .probing(Probe(round: round, pending: Set(available)))
                return available.map { .getProperties(client: $0) }
                    + [.startDeadline(round: round, stage: .properties, seconds: min(settings.roundTimeout ?? 5, 5))]
            }
            let count = max(Int(Double(available.count) * settings.fractionFit), settings.minFitClients)
            return startFit(round: round, clients: sample(count, round: round, stage: .fit))
        case .evaluate(let round):
            if settings.fractionEvaluate == 0 { return completeRound() }
            let needed = max(settings.minAvailableClients, settings.minEvaluateClients, 1)
            guard available.count >= needed else { return [] }
            let count = max(Int(Double(available.count) * settings.fractionEvaluate), settings.minEvaluateClients, 1)
            let clients = sample(count, round: round, stage: .evaluate)
            record.evaluateClients = clients
            let (weights, config) = (self.weights, evaluateConfigs[round - 1])
            return start(StageState(round: round, stage: .evaluate, pending: Set(clients)), clients: clients) { client in
                .evaluate(client: client, round: round, weights: weights, config: config)
            }
        }
    }

    private mutating func startFit(round: Int, clients: [String]) -> [Action] {
        record.fitClients = clients
        population = settings.strategyOptions.differentialPrivacy?.population ?? available.count
        let (weights, config) = (self.weights, fitConfigs[round - 1])
        return start(StageState(round: round, stage: .fit, pending: Set(clients)), clients: clients) { client in
            .fit(client: client, round: round, weights: weights, config: config)
        }
    }

    /// Ends the properties stage once every device answered: skips those the policy rules out and
    /// draws the fit clients from the rest, weighted by headroom; too few eligible waits and asks again.
    private mutating func settleProbe(_ probe: Probe) -> [Action] {
        phase = .probing(probe)
        guard probe.pending.isEmpty, let policy = settings.selection else { return [] }
        var candidates: [(client: String, headroom: Double)] = []
        record.skipped = [:]
        for client in available {
            guard let report = probe.reports[client] else { continue }  // joined after the question: next round
            switch EdgeSelection.assess(report, policy: policy) {
            case .success(let headroom): candidates.append((client, headroom))
            case .failure(let reason): record.skipped[client] = reason
            }
        }
        guard candidates.count >= settings.minFitClients else {
            phase = .waiting(.retry(probe.round))
            return [.retryLater(round: probe.round, seconds: policy.retrySeconds)]
        }
        let count = max(Int(Double(candidates.count) * settings.fractionFit), settings.minFitClients)
        var generator = SplitMix64(seed: settings.seed &+ UInt64(probe.round) &* 0x9E37_79B9 &+ 2)
        return startFit(round: probe.round, clients: EdgeSelection.choose(count, from: candidates, using: &generator))
    }

    private mutating func start(_ state: StageState, clients: [String], instruction: (String) -> Action) -> [Action] {
        phase = .running(state)
        var actions: [Action] = [.stageStarted(round: state.round, stage: state.stage, clients: clients)]
        actions += clients.map(instruction)
        if let timeout = settings.roundTimeout {
            actions.append(.startDeadline(round: state.round, stage: state.stage, seconds: timeout))
        }
        return actions
    }

    /// Stores the stage's progress, and ends it once nobody owes an answer.
    private mutating func settle(_ state: StageState) -> [Action] {
        phase = .running(state)
        guard state.pending.isEmpty else { return [] }
        switch state.stage {
        case .fit:
            record.fitResults = state.fits.count
            record.fitFailures = state.failures
            record.fitMetrics = FLAverages.weightedMetrics(state.fits.map { ($0.numExamples, $0.metrics) })
            if state.fits.isEmpty {
                record.aggregationNote = "no client returned usable weights"
            } else if !settings.acceptFailures, !state.failures.isEmpty {
                record.aggregationNote = "accept_failures is off and \(state.failures.count) client(s) failed"
            } else if let privacy = settings.strategyOptions.differentialPrivacy, !state.failures.isEmpty {
                // As Flower's DP wrapper: the noise is sized for every sampled client answering.
                record.aggregationNote = "differential privacy needs every sampled client's answer; \(state.failures.count) failed"
                record.epsilon = accountant.releases > 0 ? accountant.epsilon(delta: privacy.delta) : 0
            } else {
                do {
                    let sampled = record.fitClients.count
                    weights = try strategy.aggregate(round: state.round, current: weights, results: state.fits, sampled: sampled)
                    record.aggregated = true
                    if let privacy = settings.strategyOptions.differentialPrivacy {
                        accountant.compose(samplingRate: Double(sampled) / Double(max(population, sampled)), noiseMultiplier: privacy.noiseMultiplier)
                        record.epsilon = accountant.epsilon(delta: privacy.delta)
                    }
                } catch {
                    record.aggregationNote = error.message
                }
            }
            phase = .waiting(.evaluate(state.round))
            return advance()
        case .evaluate:
            record.evaluateResults = state.evaluations.count
            record.evaluateFailures = state.failures
            if settings.acceptFailures || state.failures.isEmpty {
                record.loss = FLAverages.weightedLoss(state.evaluations)
                record.metrics = FLAverages.weightedMetrics(state.evaluations.map { ($0.numExamples, $0.metrics) })
            }
            return completeRound()
        case .properties, .parameters:
            return []  // these stages settle in settleProbe and parametersReturned
        }
    }

    private mutating func completeRound() -> [Action] {
        let done = record
        history.append(done)
        var actions: [Action] = [.roundCompleted(done, weights: weights)]
        if done.round >= settings.rounds {
            phase = .finished
            actions.append(.finished(weights: weights))
            actions += available.map { .disconnect(client: $0) }
            return actions
        }
        record = FLRoundRecord(round: done.round + 1)
        phase = .waiting(.fit(done.round + 1))
        return actions + advance()
    }

    /// `count` distinct clients (all when fewer are connected), drawn by a generator seeded from the
    /// settings' seed, the round and the stage, so a run with the same join order repeats.
    private func sample(_ count: Int, round: Int, stage: Stage) -> [String] {
        var pool = available
        var generator = SplitMix64(seed: settings.seed &+ UInt64(round) &* 0x9E37_79B9 &+ (stage == .fit ? 0 : 1))
        let take = min(count, pool.count)
        for index in 0..<take {
            let pick = index + Int(generator.next() % UInt64(pool.count - index))
            pool.swapAt(index, pick)
        }
        return Array(pool.prefix(take))
    }
}
