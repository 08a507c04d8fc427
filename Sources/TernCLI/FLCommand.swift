import ArgumentParser
import Foundation
import Logging
import Metrics
import TernCore
import TernTraining
import TernFederated
import TernHTTP
import TernDevice
import TernMetrics
import TernRuntime
import TernTraining
import UnixSignals

/// `tern fl`: federated learning with Flower's protocol.
struct FLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fl", abstract: "Federated learning that Flower clients and servers interoperate with.",
        subcommands: [FLServerCommand.self, FLClientCommand.self, FLTrainCommand.self, FLStatusCommand.self, FLReportCommand.self, FLAggregateCommand.self, FLPrivacyCommand.self])
}

/// `tern fl server`: a Flower-compatible coordinator that unmodified Flower 1.42 `NumPyClient`s join.
struct FLServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run a federated-learning coordinator that Flower clients join.",
        discussion: """
            Speaks Flower's `flwr.proto.FlowerService/Join` stream, so `flwr.client.start_client`
            programs join unchanged. Settings come from --config (YAML: Flower's knobs, the
            strategy and its options, per-round fit_config/evaluate_config whose values may be
            expressions of `round` such as "5 if round < 10 else 3"); the flags override it, so a
            one-line start needs no file. Without --initial-model the initial weights come from one
            client's get_parameters, as in Flower. The run's history (per round: clients, failures
            by reason, loss and metrics, seconds and bytes) is printed as JSON at the end and
            written to --history.

            With --state-db every completed round is committed to SQLite with the global weights
            and the strategy's state; started again with the same --state-db and --run, the
            coordinator resumes after its last completed round. SIGTERM or SIGINT stops a run
            between answers: clients are told to reconnect in --reconnect-seconds (Flower clients
            do), so a restarted coordinator picks them up.
            """)

    @Option(name: .customLong("state-db"), help: "SQLite file for rounds, participants and checkpoints (resumes a run).")
    var stateDB: String?
    @Option(name: .customLong("run"), help: "The run's name in --state-db.") var runName = "default"
    @Option(name: .customLong("reconnect-seconds"), help: "On SIGTERM/SIGINT, tell clients to reconnect after this many seconds.")
    var reconnectSeconds = 5
    @Option(name: .customLong("metrics-port"), help: "Serve Prometheus metrics (tern_fl_*) on this port.") var metricsPort: Int?

    @Option(help: "YAML file with the run's settings.") var config: String?
    @Option(help: "HOST:PORT to listen on (default 0.0.0.0:8080).") var address: String?
    @Option(help: "Number of rounds (num_rounds).") var rounds: Int?
    @Option(help: "Strategy: fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad, fedmedian, fedtrimmedavg, krum, multikrum.")
    var strategy: String?
    @Option(name: .customLong("min-fit-clients")) var minFitClients: Int?
    @Option(name: .customLong("min-evaluate-clients")) var minEvaluateClients: Int?
    @Option(name: .customLong("min-available-clients")) var minAvailableClients: Int?
    @Option(name: .customLong("fraction-fit")) var fractionFit: Double?
    @Option(name: .customLong("fraction-evaluate")) var fractionEvaluate: Double?
    @Option(name: .customLong("round-timeout"), help: "Seconds each stage waits for answers.") var roundTimeout: Double?
    @Option(name: .customLong("accept-failures"), help: "Aggregate a round that had failures (true/false).") var acceptFailures: Bool?
    @Option(help: "Seed of the client sampling.") var seed: UInt64?
    @Option(help: "Compress updates with Tern clients that support it: none, fp16 or int8.") var compression: String?
    @Option(name: .customLong("initial-model"), help: "ONNX model whose float initializers are the initial weights.")
    var initialModel: String?
    @Option(help: "Write the run's history as JSON here.") var history: String?
    @Option(name: .customLong("weights-dir"), help: "Write the final global arrays here, one .npy each (0.npy, 1.npy, ...).")
    var weightsDir: String?
    @Option(name: .customLong("tls-certificate"), help: "PEM certificate chain: serve TLS.") var tlsCertificate: String?
    @Option(name: .customLong("tls-private-key"), help: "PEM private key of --tls-certificate.") var tlsPrivateKey: String?

    /// The command line, as the run's settings in the database.
    func settingsText() -> String {
        CommandLine.arguments.dropFirst().joined(separator: " ")
    }

    func settings() throws -> FLSettings {
        var settings = try config.map { try FLSettings.load(path: $0) } ?? FLSettings()
        if let address { settings.address = address }
        if let rounds { settings.rounds = rounds }
        if let strategy { settings.strategy = try FLSettings.strategyKind(strategy) }
        if let minFitClients { settings.minFitClients = minFitClients }
        if let minEvaluateClients { settings.minEvaluateClients = minEvaluateClients }
        if let minAvailableClients { settings.minAvailableClients = minAvailableClients }
        if let fractionFit { settings.fractionFit = fractionFit }
        if let fractionEvaluate { settings.fractionEvaluate = fractionEvaluate }
        if let roundTimeout { settings.roundTimeout = roundTimeout }
        if let acceptFailures { settings.acceptFailures = acceptFailures }
        if let seed { settings.seed = seed }
        if let compression {
            guard compression == "none" || UpdateCompression(rawValue: compression) != nil else { throw ValidationError("--compression must be none, fp16 or int8") }
            settings.compression = UpdateCompression(rawValue: compression)
        }
        if let initialModel { settings.initialModel = initialModel }
        if let history { settings.historyPath = history }
        if let weightsDir { settings.weightsDirectory = weightsDir }
        if let tlsCertificate { settings.tlsCertificate = tlsCertificate }
        if let tlsPrivateKey { settings.tlsPrivateKey = tlsPrivateKey }
        try settings.validate()
        return settings
    }

    func run() async throws {
        let settings = try settings()
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "tern.fl")
        // Metrics first: the coordinator's handles are made by whatever factory is in place.
        var metricsTask: Task<Void, Never>?
        if let metricsPort {
            let exporter = PrometheusExporter()
            MetricsSystem.bootstrap(exporter.factory)
            let service = HTTPFrontend.metricsServer(exporter: exporter, host: "0.0.0.0", port: metricsPort, logger: logger)
            metricsTask = Task {
                do { try await service.run() } catch { logger.error("fl: metrics port \(metricsPort): \(error)") }
            }
        }
        defer { metricsTask?.cancel() }
        let store = try stateDB.map { try FLStore(path: $0) }
        let run = runName
        let (engine, earlier) = try FLRunStart.begin(run: run, settings: settings, store: store, command: settingsText(), logger: logger) {
            () throws(TernError) -> FLWeights in try settings.initialModel.map { path throws(TernError) in try ONNXInitializers.weights(path: path) } ?? []
        }
        let coordinator = FLCoordinator(engine: engine, earlier: earlier, logger: logger) { summary, checkpoint in
            do {
                try store?.save(run: run, summary: summary, checkpoint: checkpoint)
            } catch let error as TernError {
                logger.error("fl: cannot save round \(summary.record.round): \(error.message)")
            } catch {
                logger.error("fl: cannot save round \(summary.record.round): \(error)")
            }
        }
        let reconnect = reconnectSeconds
        let signals = Task {
            for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                await coordinator.stop(reconnectSeconds: reconnect)
                return
            }
        }
        defer { signals.cancel() }
        let summary = try await FLServer(settings: settings, coordinator: coordinator, logger: logger).run { address in
            FileHandle.standardError.write(Data("fl: listening on \(address)\n".utf8))
        }
        try store?.end(run: run, status: summary.interrupted ? "interrupted" : "finished")
        if let directory = settings.weightsDirectory, let weights = await coordinator.weights, !summary.interrupted {
            try FLWeightsFiles.write(weights, to: directory)
        }
        let json = try FLJSON.encoder(pretty: true).encode(summary)
        if let path = settings.historyPath { try json.write(to: URL(fileURLWithPath: path), options: .atomic) }
        FileHandle.standardOutput.write(json + Data("\n".utf8))
    }
}

/// `tern fl aggregate`: runs one strategy over recorded rounds of client results, offline. The
/// parity tests feed it the same fixed results they give Flower's own strategies.
struct FLAggregateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aggregate",
        abstract: "Aggregate recorded client results with a strategy, without clients.",
        discussion: """
            The plan is JSON: {"strategy": {"name": "fedadam", "eta": 0.1, ...}, "differential_privacy":
            {"noise_multiplier": 1.0, "clipping_norm": 0.5} (optional), "current": ["w0.npy", ...],
            "rounds": [[{"weights": ["c0_0.npy", ...], "num_examples": 10}, ...], ...]}. Strategy keys are
            those of fl.yaml's strategy mapping. Round r's output arrays are written to OUT/r/0.npy, 1.npy, ...
            and each round starts from the previous round's output, as in a run.
            """)

    @Argument(help: "The plan (JSON).") var plan: String
    @Option(help: "Directory for the outputs.") var out: String

    struct Plan: Decodable {
        struct Result: Decodable {
            var weights: [String]
            var num_examples: Int
        }
        var current: [String]
        var rounds: [[Result]]
    }

    func run() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: plan))
        let parsed = try JSONDecoder().decode(Plan.self, from: data)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any], let strategyMap = object["strategy"] else {
            throw ValidationError("the plan needs a strategy")
        }
        var settingsMap: [String: Any] = ["strategy": strategyMap]
        if let privacy = object["differential_privacy"] { settingsMap["differential_privacy"] = privacy }
        let yaml = String(decoding: try JSONSerialization.data(withJSONObject: settingsMap), as: UTF8.self)
        let settings = try FLSettings.parse(yaml: yaml, source: plan)
        var strategy = try FLStrategy(settings.strategy, options: settings.strategyOptions)
        var current = try parsed.current.enumerated().map { index, path in try FLArray(tensor: NumpyFile.read(path, name: "current\(index)")) }
        for (index, round) in parsed.rounds.enumerated() {
            let results = try round.enumerated().map { client, result in
                FitResult(
                    clientID: "client\(client)",
                    weights: try result.weights.map { try FLArray(tensor: NumpyFile.read($0, name: "w")) },
                    numExamples: result.num_examples)
            }
            current = try strategy.aggregate(round: index + 1, current: current, results: results)
            try FLWeightsFiles.write(current, to: "\(out)/\(index + 1)")
        }
    }
}

/// `tern fl privacy`: the ε that rounds of server-side differential privacy spend.
struct FLPrivacyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "privacy",
        abstract: "Print the privacy spent (ε at δ) by rounds of the sampled Gaussian mechanism.",
        discussion: """
            Each round samples clients at --sampling-rate (clients per round / population) and adds
            Gaussian noise with --noise-multiplier; the RDP accountant the coordinator uses adds the
            rounds up and converts to ε at --delta. Plan a run's noise before starting it.
            """)

    @Option(name: .customLong("noise-multiplier")) var noiseMultiplier: Double
    @Option(name: .customLong("sampling-rate")) var samplingRate: Double = 1
    @Option var rounds: Int
    @Option var delta: Double = 1e-5

    func run() throws {
        guard noiseMultiplier >= 0, (0...1).contains(samplingRate), rounds >= 0, delta > 0, delta < 1 else {
            throw ValidationError("need --noise-multiplier >= 0, --sampling-rate in [0, 1], --rounds >= 0 and --delta in (0, 1)")
        }
        var accountant = RDPAccountant()
        accountant.compose(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, count: rounds)
        print(String(format: "%.10g", accountant.epsilon(delta: delta)))
    }
}

/// `tern fl status`: a run's progress from its state database, a bar per round.
struct FLStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a federated run's rounds from its --state-db (while it runs, too).")

    @Option(name: .customLong("state-db")) var stateDB: String
    @Option(name: .customLong("run"), help: "The run (default: the most recent).") var runName: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let (store, name) = try FLStore.openRun(stateDB, runName)
        let info = try store.run(name)
        let rounds = try store.summaries(run: name)
        if json {
            let encoder = FLJSON.encoder(pretty: true)
            struct Status: Encodable {
                var run: FLRunInfo?
                var rounds: [FLRoundSummary]
            }
            print(String(decoding: try encoder.encode(Status(run: info, rounds: rounds)), as: UTF8.self))
        } else {
            print(FLReport.text(info: info, rounds: rounds))
        }
    }
}

/// `tern fl report`: a run as an HTML page (loss and metrics per round, participation per client).
struct FLReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Write a federated run's HTML report.")

    @Option(name: .customLong("state-db")) var stateDB: String
    @Option(name: .customLong("run"), help: "The run (default: the most recent).") var runName: String?
    @Option(help: "The HTML file to write.") var out: String

    func run() throws {
        let (store, name) = try FLStore.openRun(stateDB, runName)
        let page = FLReport.html(info: try store.run(name), rounds: try store.summaries(run: name))
        try Data(page.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
    }
}

/// `tern fl client`: this device as a Flower client of any Flower server.
struct FLClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Join a Flower server and train the model's dense layers on local data.",
        discussion: """
            Speaks Flower's FlowerService/Join stream, so it joins `flwr.server.start_server` (or
            Tern's coordinator) beside Python clients. The model's trainable part is a chain of
            Gemm / MatMul + Add layers with Relu between them; its float initializers, in graph
            order, are the weights exchanged. --data is an .npz (np.savez: x float32 [N, D], y int64
            [N]) or a CSV (label last). The round's config keys local_epochs, learning_rate,
            batch_size, optimizer (sgd, adam), momentum and proximal_mu are honoured. get_properties
            reports the device's temperature (and energy per round where power rails can be read).
            The link is retried with backoff; at the end the JSON summary is printed and, with
            --out, the last global weights are written into a copy of the model.
            """)

    @Option(help: "HOST:PORT of the Flower server.") var server: String
    @Option(help: "The ONNX model whose dense layers are trained.") var model: String
    @Option(help: "Local training data (.npz or .csv).") var data: String
    @Option(name: .customLong("eval-data"), help: "Local evaluation data (default: the training data).") var evalData: String?
    @Option(name: .customLong("root-cert"), help: "PEM of the CA of the server's certificate: connect with TLS.") var rootCert: String?
    @Option(name: .customLong("max-retries"), help: "Failed connection attempts in a row before giving up (default: keep trying).")
    var maxRetries: Int?
    @Option(help: "Write the final weights into a copy of the model here.") var out: String?
    @Option(name: .customLong("backbone-repository"), help: "A model repository holding a frozen backbone: the data goes through it first (ONNX Runtime) and --model trains on its embeddings.")
    var backboneRepository: String?
    @Option(name: .customLong("backbone-model"), help: "The backbone's name in --backbone-repository.") var backboneModel: String?
    @Option(name: .customLong("backbone-output"), help: "The backbone output to train on (default: its first).") var backboneOutput: String?

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        guard (backboneRepository == nil) == (backboneModel == nil) else {
            throw ValidationError("--backbone-repository and --backbone-model go together")
        }
        guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]) else {
            throw ValidationError("--server must be HOST:PORT")
        }
        let host = String(server[..<colon])
        let (network, weights) = try DenseNetwork.load(path: model)
        var training = try TrainingSet.load(path: data)
        var evaluation = try evalData.map { try TrainingSet.load(path: $0) }
        if let backboneRepository, let backboneModel {
            let logger = Logger(label: "tern.fl.client")
            guard let local = try await LocalModel.load(model: backboneModel, repository: backboneRepository, needed: true, library: nil, logger: logger) else {
                throw ValidationError("cannot load the backbone \(backboneModel)")
            }
            let backbone = Backbone(server: local.server, model: backboneModel, output: backboneOutput)
            training = try await backbone.embed(training)
            if let set = evaluation { evaluation = try await backbone.embed(set) }
            logger.info("fl client: \(training.count) rows embedded by \(backboneModel) into \(training.width) features")
            try? local.server.unload(model: backboneModel)
        }
        let telemetry = SystemTelemetry()
        let client = FLEdgeClient(
            options: FLEdgeClient.Options(host: host == "localhost" ? "127.0.0.1" : host, port: port, rootCertificate: rootCert, maxRetries: maxRetries),
            network: network, weights: weights, data: training, evaluation: evaluation,
            properties: {
                let stats = telemetry.read()
                var properties: [String: FLScalar] = ["device": .string("tern")]
                if let hottest = stats.hottestCelsius { properties["temperature_c"] = .double(hottest) }
                return properties
            },
            power: { telemetry.read().totalMilliwatts.map { $0 / 1000 } })
        let summary = try await client.run()
        if let out { try ONNXInitializers.write(client.weights, template: model, to: out) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        FileHandle.standardOutput.write(try encoder.encode(summary) + Data("\n".utf8))
    }
}

/// `tern fl train`: local training of a model's dense layers, without a server.
struct FLTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Train a model's dense layers on local data and write the result as a new ONNX file.")

    @Option(help: "The ONNX model.") var model: String
    @Option(help: "Training data (.npz or .csv).") var data: String
    @Option(help: "Where the trained model is written.") var out: String
    @Option var epochs = 1
    @Option(name: .customLong("learning-rate")) var learningRate = 0.01
    @Option(name: .customLong("batch-size")) var batchSize = 32
    @Option(help: "sgd or adam.") var optimizer = "sgd"
    @Option var momentum = 0.0
    @Option(name: .customLong("proximal-mu")) var proximalMu = 0.0
    @Option var seed: UInt64 = 0

    func run() throws {
        guard let kind = TrainingOptions.Optimizer(rawValue: optimizer) else { throw ValidationError("--optimizer must be sgd or adam") }
        let (network, weights) = try DenseNetwork.load(path: model)
        let set = try TrainingSet.load(path: data)
        var options = TrainingOptions()
        options.epochs = epochs
        options.learningRate = learningRate
        options.batchSize = batchSize
        options.optimizer = kind
        options.momentum = momentum
        options.proximalMu = proximalMu
        options.seed = seed
        let trainer = Trainer(network: network)
        let before = try trainer.evaluate(weights: weights, data: set)
        let (trained, _) = try trainer.train(weights: weights, data: set, options: options)
        let after = try trainer.evaluate(weights: trained, data: set)
        try ONNXInitializers.write(trained, template: model, to: out)
        print(String(format: "loss %.6f -> %.6f, accuracy %.4f -> %.4f", before.loss, after.loss, before.accuracy, after.accuracy))
    }
}

/// A frozen feature extractor served in this process: it turns each row into its embedding once,
/// before training, so the trainer sees only the head's inputs.
struct Backbone {
    let server: InferenceServer
    let model: String
    let output: String?

    func embed(_ set: TrainingSet) async throws -> TrainingSet {
        let config = try server.modelConfig(model)
        guard let input = config.input.first else { throw ValidationError("the backbone \(model) has no inputs") }
        let outputName = output ?? config.output.first?.name ?? ""
        var features: [Double] = []
        var width = 0
        var start = 0
        while start < set.count {
            let end = min(start + 256, set.count)
            let (x, _) = set.batch(Array(start..<end))
            let tensor = Tensor(name: input.name, shape: [Int64(end - start), Int64(set.width)], values: x.map { Float($0) })
            let response = try await server.infer(InferenceRequest(modelName: model, inputs: [tensor], outputs: [RequestedOutput(name: outputName)]))
            guard let out = response.outputs.first else { throw ValidationError("the backbone gave no output \(outputName)") }
            let values = try out.values(as: Float.self).map { Double($0) }
            guard !values.isEmpty, values.count % (end - start) == 0 else {
                throw ValidationError("the backbone's output \(outputName) has \(values.count) values for \(end - start) rows")
            }
            width = values.count / (end - start)
            features += values
            start = end
        }
        return TrainingSet(features: features, labels: set.labels, width: width)
    }
}

extension FLStore {
    /// The existing database at `path` and the run to show: `name`, or the most recent one.
    static func openRun(_ path: String, _ name: String?) throws -> (FLStore, String) {
        guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("no state database at \(path)") }
        let store = try FLStore(path: path)
        guard let run = try name ?? store.runs().first?.run else { throw ValidationError("\(path) holds no runs") }
        return (store, run)
    }
}
