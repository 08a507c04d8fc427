import Foundation
import CoreMetrics
import Logging
import TernCore
import TernTraining

/// One completed round with what only the coordinator can measure: time and traffic.
public struct FLRoundSummary: Sendable, Codable, Equatable {
    /// The engine's record of the round.
    public var record: FLRoundRecord
    /// Seconds from the first fit instruction to the last evaluation answer.
    public var seconds: Double
    /// Bytes of weights sent to clients (`.npy` files in `FitIns` and `EvaluateIns`).
    public var bytesSent: Int
    /// Bytes of weights received from clients (`FitRes`).
    public var bytesReceived: Int
}

/// The outcome of a run: each round, failures by reason, the final weights' shapes.
public struct FLRunSummary: Sendable, Codable, Equatable {
    /// The rounds in order.
    public var rounds: [FLRoundSummary]
    /// Failures over the run, by reason.
    public var failures: [String: Int]
    /// The shapes of the final global arrays.
    public var shapes: [[Int]]
    /// Seconds from the first connection to the end.
    public var seconds: Double
    /// Whether the run was stopped before its last round (clients were told to come back).
    public var interrupted = false
}

/// Drives a `RoundEngine` for the clients connected over Flower's protocol: turns the engine's
/// actions into instructions on each client's stream, answers and disconnects into events, and
/// deadlines into timers. Clients' answers are decoded in their own connection tasks.
public actor FLCoordinator {
    private var engine: RoundEngine
    private var links: [String: AsyncStream<FLInstruction>.Continuation] = [:]
    /// The stage's global weights on the wire, per form (float32 for everyone, float16 for Tern peers).
    private var encoded: (round: Int, stage: RoundEngine.Stage, plain: Flwr_Proto_Parameters?, compressed: Flwr_Proto_Parameters?)?
    /// Clients asked for their properties before they join the rounds (to learn what they decode).
    private var joining: Set<String> = []
    /// What each Tern client said it decodes.
    private var decodes: [String: Set<UpdateCompression>] = [:]
    private var deadlines: [Task<Void, Never>] = []
    private var summaries: [FLRoundSummary] = []
    private var roundStarted: ContinuousClock.Instant?
    private var bytesSent = 0
    private var bytesReceived = 0
    private var started: ContinuousClock.Instant?
    private var finalWeights: FLWeights?
    private var waiters: [CheckedContinuation<FLRunSummary, Never>] = []
    private var interrupted = false
    private let logger: Logger
    private let metrics = FLMetrics()
    private let onRound: @Sendable (FLRoundSummary, FLCheckpoint) -> Void

    /// A coordinator running `engine`; `earlier` are the rounds a resumed run already completed;
    /// `onRound` hears of each completed round with the checkpoint after it (the store saves both).
    public init(
        engine: RoundEngine, earlier: [FLRoundSummary] = [], logger: Logger = Logger(label: "tern.fl"),
        onRound: @escaping @Sendable (FLRoundSummary, FLCheckpoint) -> Void = { _, _ in }
    ) {
        self.engine = engine
        self.summaries = earlier
        self.logger = logger
        self.onRound = onRound
    }

    /// Stops the run before its end: every client is told to come back in `reconnectSeconds`
    /// (Flower clients wait that long and reconnect, to a restarted coordinator), and
    /// `waitUntilFinished` returns with `interrupted` set.
    public func stop(reconnectSeconds: Int) {
        guard finalWeights == nil else { return }
        interrupted = true
        for (_, link) in links {
            var ins = Flwr_Proto_ServerMessage.ReconnectIns()
            ins.seconds = Int64(reconnectSeconds)
            var message = Flwr_Proto_ServerMessage()
            message.reconnectIns = ins
            link.yield(FLInstruction(kind: .reconnect, message: message, payloadBytes: 0))
        }
        logger.info("fl: stopping; \(links.count) client(s) told to reconnect in \(reconnectSeconds) s")
        finish(engine.weights)
    }

    /// The final global weights once the run has finished.
    public var weights: FLWeights? { finalWeights }

    /// Waits for the last round and returns the run's summary.
    public func waitUntilFinished() async -> FLRunSummary {
        if finalWeights != nil { return summary() }
        return await withCheckedContinuation { waiters.append($0) }
    }

    // MARK: Connections (called by the Flower service)

    private var connections = 0

    /// A new stream from `peer`: its client id (unique even for several streams on one HTTP/2
    /// connection) and the instructions for it.
    func connect(peer: String) -> (String, AsyncStream<FLInstruction>) {
        connections += 1
        let client = "\(peer)#\(connections)"
        return (client, connect(client))
    }

    /// Ends a stream whose client broke the protocol.
    func misbehaved(_ client: String, reason: String) {
        logger.warning("fl: client \(client) \(reason); closing its stream")
    }

    func connect(_ client: String) -> AsyncStream<FLInstruction> {
        let (stream, continuation) = AsyncStream<FLInstruction>.makeStream()
        links[client] = continuation
        metrics.connected.record(links.count)
        if started == nil { started = .now }
        logger.info("fl: client \(client) joined (\(links.count) connected)")
        if engine.settings.compression != nil {
            // Learn what it decodes first; it joins the rounds with its answer.
            joining.insert(client)
            send(client, FLInstruction(kind: .getProperties, message: FLWire.getProperties, payloadBytes: 0))
        } else {
            apply(engine.clientJoined(client))
        }
        return stream
    }

    func disconnected(_ client: String) {
        guard let link = links.removeValue(forKey: client) else { return }
        link.finish()
        decodes[client] = nil
        if joining.remove(client) != nil { return }  // never joined the rounds
        metrics.connected.record(links.count)
        logger.info("fl: client \(client) left (\(links.count) connected)")
        apply(engine.clientLeft(client))
    }

    func answered(_ client: String, kind: FLInstructionKind, reply: FLReply, bytes: Int) {
        bytesReceived += bytes
        metrics.bytesReceived.increment(by: bytes)
        switch (kind, reply) {
        case (.getParameters, .parameters(let outcome)):
            apply(engine.parametersReturned(from: client, outcome))
        case (.getProperties, .properties(let properties)):
            if joining.remove(client) != nil {
                decodes[client] = UpdateCompression.supported(properties?[UpdateCompression.propertyKey])
                apply(engine.clientJoined(client))
            } else {
                apply(engine.propertiesReturned(from: client, properties))
            }
        case (.fit(let round), .fit(let outcome)):
            if case .failure(let reason) = outcome { logger.warning("fl: round \(round): fit from \(client) failed: \(reason.rawValue)") }
            apply(engine.fitReturned(from: client, round: round, outcome))
        case (.evaluate(let round), .evaluate(let outcome)):
            apply(engine.evaluateReturned(from: client, round: round, outcome))
        default:
            break
        }
    }

    private func retry(round: Int) {
        apply(engine.retryDue(round: round))
    }

    private func deadline(round: Int, stage: RoundEngine.Stage) {
        apply(engine.deadlinePassed(round: round, stage: stage))
    }

    // MARK: Actions

    private func apply(_ actions: [RoundEngine.Action]) {
        for action in actions {
            switch action {
            case .getParameters(let client):
                send(client, FLInstruction(kind: .getParameters, message: FLWire.getParameters, payloadBytes: 0))
            case .getProperties(let client):
                send(client, FLInstruction(kind: .getProperties, message: FLWire.getProperties, payloadBytes: 0))
            case .retryLater(let round, let seconds):
                logger.info("fl: round \(round): too few devices qualify; asking again in \(seconds) s")
                deadlines.append(Task { [weak self] in
                    try? await Task.sleep(for: .seconds(seconds))
                    guard !Task.isCancelled else { return }
                    await self?.retry(round: round)
                })
            case .fit(let client, let round, let weights, let config):
                let compression = compression(for: client)
                guard let parameters = parameters(round: round, stage: .fit, weights: weights, compressed: compression != nil) else { continue }
                var config = config
                if let compression { config[UpdateCompression.propertyKey] = .string(compression.rawValue) }
                send(client, FLInstruction(
                    kind: .fit(round: round), message: FLWire.fit(parameters, config: config), payloadBytes: FLWire.bytes(parameters),
                    base: compression == nil ? nil : weights))
            case .evaluate(let client, let round, let weights, let config):
                let compressed = compression(for: client) != nil
                guard let parameters = parameters(round: round, stage: .evaluate, weights: weights, compressed: compressed) else { continue }
                send(client, FLInstruction(kind: .evaluate(round: round), message: FLWire.evaluate(parameters, config: config), payloadBytes: FLWire.bytes(parameters)))
            case .startDeadline(let round, let stage, let seconds):
                deadlines.append(Task { [weak self] in
                    try? await Task.sleep(for: .seconds(seconds))
                    guard !Task.isCancelled else { return }
                    await self?.deadline(round: round, stage: stage)
                })
            case .stageStarted(let round, let stage, let clients):
                if stage == .fit {
                    roundStarted = .now
                    metrics.round.record(round)
                }
                metrics.clients(stage: stage.rawValue, clients.count)
                logger.info("fl: round \(round): \(stage.rawValue) on \(clients.count) client(s)")
            case .roundCompleted(let record, _):
                completed(record)
            case .finished(let weights):
                finish(weights)
            case .disconnect(let client):
                send(client, FLInstruction(kind: .reconnect, message: FLWire.reconnect, payloadBytes: 0))
            }
        }
    }

    /// The encoding agreed with `client`: the settings' compression when the client decodes it.
    private func compression(for client: String) -> UpdateCompression? {
        guard let wanted = engine.settings.compression, decodes[client]?.contains(wanted) == true else { return nil }
        return wanted
    }

    /// The stage's global weights on the wire, encoded once per stage and form.
    private func parameters(round: Int, stage: RoundEngine.Stage, weights: FLWeights, compressed: Bool) -> Flwr_Proto_Parameters? {
        if encoded?.round != round || encoded?.stage != stage { encoded = (round, stage, nil, nil) }
        if let cached = compressed ? encoded?.compressed : encoded?.plain { return cached }
        do {
            let parameters = compressed ? try UpdateCompression.global(weights) : try FLWire.parameters(weights)
            if compressed { encoded?.compressed = parameters } else { encoded?.plain = parameters }
            return parameters
        } catch {
            logger.error("fl: cannot encode the global weights: \(error.message)")
            return nil
        }
    }

    private func send(_ client: String, _ instruction: FLInstruction) {
        guard let link = links[client], finalWeights == nil || instruction.kind == .reconnect else { return }
        bytesSent += instruction.payloadBytes
        metrics.bytesSent.increment(by: instruction.payloadBytes)
        link.yield(instruction)
    }

    private func completed(_ record: FLRoundRecord) {
        deadlines.forEach { $0.cancel() }
        deadlines.removeAll()
        let seconds = roundStarted.map { (ContinuousClock.now - $0).seconds } ?? 0
        let summary = FLRoundSummary(record: record, seconds: seconds, bytesSent: bytesSent, bytesReceived: bytesReceived)
        bytesSent = 0
        bytesReceived = 0
        summaries.append(summary)
        metrics.roundsCompleted.increment()
        metrics.duration.record(seconds)
        if let epsilon = record.epsilon { metrics.epsilon.record(epsilon) }
        for reason in record.fitFailures.values { metrics.failure(reason, stage: "fit") }
        for reason in record.evaluateFailures.values { metrics.failure(reason, stage: "evaluate") }
        for reason in record.skipped.values { metrics.skipped(reason) }
        let loss = record.loss.map { String(format: "%.4f", $0) } ?? "-"
        let metrics = record.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%.4f", $0.value))" }.joined(separator: " ")
        logger.info("fl: round \(record.round) done in \(String(format: "%.2f", seconds)) s: \(record.fitResults)/\(record.fitClients.count) fit, \(record.fitFailures.count) failed, loss \(loss) \(metrics)")
        onRound(summary, engine.checkpoint)
    }

    private func finish(_ weights: FLWeights) {
        guard finalWeights == nil else { return }
        finalWeights = weights
        deadlines.forEach { $0.cancel() }
        deadlines.removeAll()
        let result = summary()
        for waiter in waiters { waiter.resume(returning: result) }
        waiters.removeAll()
    }

    private func summary() -> FLRunSummary {
        var failures: [String: Int] = [:]
        for round in summaries {
            for reason in round.record.fitFailures.values { failures[reason.rawValue, default: 0] += 1 }
            for reason in round.record.evaluateFailures.values { failures[reason.rawValue, default: 0] += 1 }
        }
        return FLRunSummary(
            rounds: summaries, failures: failures, shapes: (finalWeights ?? engine.weights).map(\.shape),
            seconds: started.map { (ContinuousClock.now - $0).seconds } ?? 0, interrupted: interrupted)
    }
}
