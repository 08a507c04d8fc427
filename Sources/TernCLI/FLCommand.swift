import ArgumentParser
import Foundation
import Logging
import TernCore
import TernFederated

/// `tern fl`: federated learning with Flower's protocol.
struct FLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fl", abstract: "Federated learning that Flower clients and servers interoperate with.",
        subcommands: [FLServerCommand.self, FLAggregateCommand.self, FLPrivacyCommand.self])
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
            """)

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
    @Option(name: .customLong("initial-model"), help: "ONNX model whose float initializers are the initial weights.")
    var initialModel: String?
    @Option(help: "Write the run's history as JSON here.") var history: String?
    @Option(name: .customLong("weights-dir"), help: "Write the final global arrays here, one .npy each (0.npy, 1.npy, ...).")
    var weightsDir: String?
    @Option(name: .customLong("tls-certificate"), help: "PEM certificate chain: serve TLS.") var tlsCertificate: String?
    @Option(name: .customLong("tls-private-key"), help: "PEM private key of --tls-certificate.") var tlsPrivateKey: String?

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
        let initial = try settings.initialModel.map { try ONNXInitializers.weights(path: $0) } ?? []
        let engine = try RoundEngine(settings: settings, initialWeights: initial)
        let coordinator = FLCoordinator(engine: engine)
        let summary = try await FLServer(settings: settings, coordinator: coordinator).run { address in
            FileHandle.standardError.write(Data("fl: listening on \(address)\n".utf8))
        }
        if let directory = settings.weightsDirectory, let weights = await coordinator.weights {
            try FLWeightsFiles.write(weights, to: directory)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = try encoder.encode(summary)
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
