import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TernCore
import TernTraining
import TernRuntime

/// Federated learning as a pattern of `tern serve` (`--fl-port`): the device that aggregates also
/// serves the result. The coordinator runs as a service on its own port; with a model named, the
/// initial weights are that model's serving version's initializers, and the global weights (after
/// every K rounds and after the last) become a new version of it in the repository, which goes
/// through the model's validation gates before the hot-swap. A version the gates reject is removed
/// from the repository (kept under the state folder) and the serving version goes on.
public struct FederatedPattern: ServerPattern {
    /// The service that runs the coordinator.
    public let service: FederatedService

    /// A pattern running `service`.
    public init(service: FederatedService) { self.service = service }

    /// `federated`.
    public var name: String { "federated" }
    /// The coordinator.
    public var services: [any Service] { [service] }
    /// Lets the coordinator start: it trains a served model, which must have loaded first.
    public func modelsLoaded() async { service.modelsLoaded() }
    /// `/fl/status`: the run's rounds so far as JSON (API group `fl`).
    public var metricsPages: [MetricsPage] {
        let service = self.service
        return [MetricsPage(path: "/fl/status", group: "fl") { service.statusJSON() }]
    }
}

/// One published global model: its round, the version it became and what the gates said.
public struct FLPublication: Sendable, Codable, Equatable {
    /// The round whose global weights these are.
    public var round: Int
    /// The repository version written.
    public var version: Int64
    /// Whether the gates let it serve.
    public var accepted: Bool
    /// The gates' verdicts and the lifecycle's detail.
    public var detail: String
}

/// The coordinator inside `tern serve`.
public final class FederatedService: Service, Sendable {
    /// Everything the service is told.
    public struct Options: Sendable {
        /// The run's settings (`--fl-config`, address from `--fl-port`).
        public var settings: FLSettings
        /// The served model whose weights are trained and published; nil: train only.
        public var model: String?
        /// Publish every this many rounds as well as after the last; nil: after the last only.
        public var publishEvery: Int?
        /// The SQLite file of the rounds (resume after a restart).
        public var stateDB: String?
        /// The run's name in it.
        public var run: String
        /// Where rejected models are kept.
        public var stateDirectory: String
        /// Seconds clients are told to wait before reconnecting when the server stops.
        public var reconnectSeconds: Int

        /// Options with these values.
        public init(settings: FLSettings, model: String?, publishEvery: Int?, stateDB: String?, run: String, stateDirectory: String, reconnectSeconds: Int) {
            self.settings = settings
            self.model = model
            self.publishEvery = publishEvery
            self.stateDB = stateDB
            self.run = run
            self.stateDirectory = stateDirectory
            self.reconnectSeconds = reconnectSeconds
        }
    }

    let options: Options
    let engine: InferenceServer
    let logger: Logger
    private let state = Mutex<(summaries: [FLRoundSummary], publications: [FLPublication], finished: Bool)>(([], [], false))
    private let started: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation) = AsyncStream<Void>.makeStream()

    /// A service for `engine` with `options`.
    public init(options: Options, engine: InferenceServer, logger: Logger) {
        self.options = options
        self.engine = engine
        self.logger = logger
    }

    /// Called once the start-up models have loaded.
    func modelsLoaded() {
        started.continuation.yield()
        started.continuation.finish()
    }

    /// The publications so far.
    public var publications: [FLPublication] { state.withLock { $0.publications } }

    /// The `/fl/status` page.
    func statusJSON() -> String {
        struct Status: Encodable {
            var finished: Bool
            var rounds: [FLRoundSummary]
            var publications: [FLPublication]
        }
        let snapshot = state.withLock { Status(finished: $0.finished, rounds: $0.summaries, publications: $0.publications) }
        do {
            return String(decoding: try FLJSON.encoder().encode(snapshot), as: UTF8.self)
        } catch {
            return #"{"error": "cannot encode the status"}"#
        }
    }

    /// Runs the coordinator once the models have loaded, until its last round (or the server's
    /// shutdown), publishing as it goes. A coordinator that cannot start says why in the log and
    /// leaves the server serving.
    public func run() async throws {
        let begin = await cancelWhenGracefulShutdown {
            for await _ in self.started.stream { return true }
            return false
        }
        guard (try? begin) == true else { return }
        do {
            try await coordinate()
        } catch let error as TernError {
            logger.error("fl: the coordinator stopped: \(error.message)")
        } catch {
            logger.error("fl: the coordinator stopped: \(error)")
        }
        state.withLock { $0.finished = true }
    }

    private func coordinate() async throws {
        if let model = options.model, engine.configuration.controlMode == .none {
            throw TernError(.failedPrecondition,
                "--fl-model \(model) publishes new versions, which needs --model-control-mode poll or explicit (it is none)")
        }
        let store = try options.stateDB.map { path throws(TernError) in try FLStore(path: path) }
        let template = try options.model.map { model throws(TernError) in try modelFile(model) }
        let settings = options.settings
        let (engine, earlier) = try FLRunStart.begin(run: options.run, settings: settings, store: store, command: "tern serve --fl-port", logger: logger) {
            () throws(TernError) -> FLWeights in try template.map { path throws(TernError) in try ONNXInitializers.weights(path: path) } ?? []
        }
        state.withLock { $0.summaries = earlier }
        let (published, publish) = AsyncStream<(round: Int, weights: FLWeights)>.makeStream()
        let (run, every, last) = (options.run, options.publishEvery, settings.rounds)
        let coordinator = FLCoordinator(engine: engine, earlier: earlier, logger: logger) { [self] summary, checkpoint in
            state.withLock { $0.summaries.append(summary) }
            do {
                try store?.save(run: run, summary: summary, checkpoint: checkpoint)
            } catch {
                logger.error("fl: cannot save round \(summary.record.round): \(error)")
            }
            let round = summary.record.round
            let periodic = summary.record.aggregated && (every.map { round % $0 == 0 } ?? false)
            if template != nil, round == last || periodic {
                publish.yield((round, checkpoint.weights))
            }
        }
        let publisher = Task {
            for await item in published {
                guard let model = options.model, let template else { continue }
                await self.publish(item.weights, round: item.round, model: model, template: template)
            }
        }
        let summary = try await withGracefulShutdownHandler {
            try await FLServer(settings: settings, coordinator: coordinator, logger: logger).run()
        } onGracefulShutdown: { [reconnect = options.reconnectSeconds] in
            Task { await coordinator.stop(reconnectSeconds: reconnect) }
        }
        publish.finish()
        await publisher.value
        try store?.end(run: options.run, status: summary.interrupted ? "interrupted" : "finished")
        logger.info("fl: run '\(options.run)' \(summary.interrupted ? "stopped" : "finished") after \(summary.rounds.count) round(s)")
    }

    /// The ONNX file of `model`'s serving version.
    func modelFile(_ model: String) throws(TernError) -> String {
        let status = try engine.lifecycleStatus(model: model)
        guard let version = status.servingVersions.max() else { throw .unavailable("fl: model '\(model)' has no serving version to train") }
        let config = try engine.modelConfig(model, version: version)
        let file = config.defaultModelFilename.isEmpty ? "model.onnx" : config.defaultModelFilename
        return engine.configuration.repositoryPath.appendingPathComponent(model).appendingPathComponent(String(version)).appendingPathComponent(file).path
    }

    /// Writes `weights` as the model's next version and asks the lifecycle to swap to it.
    func publish(_ weights: FLWeights, round: Int, model: String, template: String) async {
        let directory = engine.configuration.repositoryPath.appendingPathComponent(model)
        let fileName = URL(fileURLWithPath: template).lastPathComponent
        let existing = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).compactMap { Int64($0) }
        guard (existing.max() ?? 0) < Int64.max else {
            logger.error("fl: \(model) has a version \(Int64.max): no next version number to publish round \(round) as")
            return
        }
        let version = (existing.max() ?? 0) + 1
        let staging = directory.appendingPathComponent(".fl-\(UUID().uuidString)")
        let target = directory.appendingPathComponent(String(version))
        do {
            try ONNXInitializers.write(weights, template: template, to: staging.appendingPathComponent(fileName).path)
            try FileManager.default.moveItem(at: staging, to: target)  // the version appears whole
        } catch {
            try? FileManager.default.removeItem(at: staging)
            logger.error("fl: cannot write round \(round)'s model as version \(version) of \(model): \(error)")
            return
        }
        var publication = FLPublication(round: round, version: version, accepted: false, detail: "")
        do {
            let report = try await engine.promote(model: model, version: version)
            publication.accepted = report.accepted
            publication.detail = ([report.detail] + report.gates.map { "\($0.name): \($0.passed ? "passed" : "failed") (\($0.detail))" })
                .filter { !$0.isEmpty }.joined(separator: "; ")
        } catch {
            publication.detail = error.message
        }
        if publication.accepted {
            logger.info("fl: round \(round)'s global model serves as version \(version) of \(model)")
        } else {
            // The gates said no: the serving version goes on; the rejected model leaves the repository.
            let kept = URL(fileURLWithPath: options.stateDirectory).appendingPathComponent("fl-rejected")
                .appendingPathComponent("\(model)-v\(version)-round\(round).onnx")
            try? FileManager.default.createDirectory(at: kept.deletingLastPathComponent(), withIntermediateDirectories: true)
            try? FileManager.default.moveItem(at: target.appendingPathComponent(fileName), to: kept)
            try? FileManager.default.removeItem(at: target)
            logger.warning("fl: round \(round)'s global model was rejected as version \(version) of \(model): \(publication.detail)")
        }
        state.withLock { $0.publications.append(publication) }
    }
}
