import Foundation
import TernCore
import TernTraining
import Yams

/// A value of a round's `FitIns.config` or `EvaluateIns.config`: a constant, or an expression of
/// the round number (`5 if round < 10 else 3`).
public enum FLConfigValue: Sendable, Equatable {
    /// The same value every round.
    case constant(FLScalar)
    /// A value computed for each round.
    case perRound(RoundExpression)

    /// The value in round `round`.
    public func value(round: Int) throws(TernError) -> FLScalar {
        switch self {
        case .constant(let scalar): return scalar
        case .perRound(let expression): return try expression.value(round: round)
        }
    }

    /// A YAML value: numbers and booleans stay what they are; a string is an expression when it
    /// parses as one and mentions `round`, and a plain string otherwise.
    public init(yaml value: Any, key: String) throws(TernError) {
        switch value {
        case let bool as Bool: self = .constant(.bool(bool))
        case let int as Int: self = .constant(.int(Int64(int)))
        case let double as Double: self = .constant(.double(double))
        case let string as String:
            if let expression = try? RoundExpression(string), expression.usesRound {
                self = .perRound(expression)
            } else {
                self = .constant(.string(string))
            }
        default:
            throw .invalidArgument("config key '\(key)': a value must be a number, a bool or a string")
        }
    }
}

/// Everything `tern fl server` is told, from `fl.yaml` and flags: Flower's knobs with Flower's
/// defaults, the strategy, the per-round configs and where to listen.
public struct FLSettings: Sendable {
    /// `HOST:PORT` to listen on (Flower's default port is 8080).
    public var address = "0.0.0.0:8080"
    /// The number of rounds (Flower's `num_rounds`).
    public var rounds = 1
    /// The aggregation rule.
    public var strategy: StrategyKind = .fedavg
    /// Its tunables.
    public var strategyOptions = StrategyOptions()
    /// The share of available clients asked to fit each round.
    public var fractionFit = 1.0
    /// The share asked to evaluate (0 skips evaluation).
    public var fractionEvaluate = 1.0
    /// The fewest clients asked to fit.
    public var minFitClients = 2
    /// The fewest clients asked to evaluate.
    public var minEvaluateClients = 2
    /// Clients that must be connected before a round starts.
    public var minAvailableClients = 2
    /// Seconds a stage (fit, evaluate) waits for answers; nil waits for all of them.
    public var roundTimeout: Double?
    /// Whether a round with failures still aggregates the answers that came (Flower: true).
    public var acceptFailures = true
    /// Seeds the client sampling, so a run can be repeated.
    public var seed: UInt64 = 0
    /// `FitIns.config` per round.
    public var fitConfig: [String: FLConfigValue] = [:]
    /// `EvaluateIns.config` per round.
    public var evaluateConfig: [String: FLConfigValue] = [:]
    /// An ONNX model whose float initializers are the initial weights (otherwise one client's `get_parameters`).
    public var initialModel: String?
    /// A PEM certificate chain for TLS (with `tlsPrivateKey`); plaintext without.
    public var tlsCertificate: String?
    /// The PEM private key for `tlsCertificate`.
    public var tlsPrivateKey: String?
    /// Where the run's history is written as JSON when it ends.
    public var historyPath: String?
    /// Where the final global weights are written (one `.npy` per array in this directory).
    public var weightsDirectory: String?
    /// Update compression with Tern clients that support it (Flower clients are unaffected); nil: none.
    public var compression: UpdateCompression?
    /// Edge-aware selection from the devices' properties; nil samples as Flower does.
    public var selection: EdgeSelectionPolicy?
    /// The largest message accepted from a client: Flower's 2 GiB - 1.
    public var maxMessageBytes = Int(Int32.max)

    /// Flower's defaults.
    public init() {}

    /// Settings from `fl.yaml`'s text; unknown keys are errors that name them.
    public static func parse(yaml text: String, source: String = "fl.yaml") throws(TernError) -> FLSettings {
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw .invalidArgument("\(source): not valid YAML: \(error)")
        }
        if loaded == nil { return FLSettings() }  // an empty file: the defaults
        guard let root = loaded as? [String: Any] else { throw .invalidArgument("\(source): expected a mapping at the top") }
        var settings = FLSettings()
        try settings.apply(root, source: source)
        return settings
    }

    /// Reads and parses the YAML file at `path`.
    public static func load(path: String) throws(TernError) -> FLSettings {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw .invalidArgument("cannot read \(path)") }
        return try parse(yaml: text, source: path)
    }

    private mutating func apply(_ root: [String: Any], source: String) throws(TernError) {
        var reader = YAMLMapReader(map: root, source: source)
        address = try reader.string("address") ?? address
        rounds = try reader.int("num_rounds", "rounds") ?? rounds
        fractionFit = try reader.double("fraction_fit") ?? fractionFit
        fractionEvaluate = try reader.double("fraction_evaluate") ?? fractionEvaluate
        minFitClients = try reader.int("min_fit_clients") ?? minFitClients
        minEvaluateClients = try reader.int("min_evaluate_clients") ?? minEvaluateClients
        minAvailableClients = try reader.int("min_available_clients") ?? minAvailableClients
        roundTimeout = try reader.double("round_timeout") ?? roundTimeout
        acceptFailures = try reader.bool("accept_failures") ?? acceptFailures
        seed = try reader.int("seed").map { UInt64(max(0, $0)) } ?? seed
        initialModel = try reader.string("initial_model") ?? initialModel
        historyPath = try reader.string("history") ?? historyPath
        weightsDirectory = try reader.string("weights_dir") ?? weightsDirectory
        if let tls = try reader.map("tls") {
            var tlsReader = YAMLMapReader(map: tls, source: "\(source): tls")
            tlsCertificate = try tlsReader.string("certificate")
            tlsPrivateKey = try tlsReader.string("private_key")
            try tlsReader.finish()
        }
        if let map = try reader.map("strategy") {
            var strategyReader = YAMLMapReader(map: map, source: "\(source): strategy")
            guard let name = try strategyReader.string("name") else { throw .invalidArgument("\(source): strategy needs a name") }
            strategy = try FLSettings.strategyKind(name)
            var options = StrategyOptions()
            options.proximalMu = try strategyReader.double("proximal_mu") ?? options.proximalMu
            options.serverLearningRate = try strategyReader.double("server_learning_rate") ?? options.serverLearningRate
            options.serverMomentum = try strategyReader.double("server_momentum") ?? options.serverMomentum
            options.eta = try strategyReader.double("eta")
            options.beta1 = try strategyReader.double("beta_1")
            options.beta2 = try strategyReader.double("beta_2")
            options.tau = try strategyReader.double("tau")
            options.trimBeta = try strategyReader.double("beta") ?? options.trimBeta
            options.numMaliciousClients = try strategyReader.int("num_malicious_clients") ?? options.numMaliciousClients
            options.numClientsToKeep = try strategyReader.int("num_clients_to_keep") ?? options.numClientsToKeep
            try strategyReader.finish()
            strategyOptions = options
        } else if let name = try reader.string("strategy") {
            strategy = try FLSettings.strategyKind(name)
        }
        if let map = try reader.map("differential_privacy") {
            var dp = YAMLMapReader(map: map, source: "\(source): differential_privacy")
            guard let sigma = try dp.double("noise_multiplier"), let norm = try dp.double("clipping_norm") else {
                throw .invalidArgument("\(source): differential_privacy needs noise_multiplier and clipping_norm")
            }
            var privacy = DifferentialPrivacySettings(noiseMultiplier: sigma, clippingNorm: norm)
            privacy.delta = try dp.double("delta") ?? privacy.delta
            privacy.population = try dp.int("population")
            try dp.finish()
            strategyOptions.differentialPrivacy = privacy
        }
        if let name = try reader.string("compression"), name != "none" {
            guard let compression = UpdateCompression(rawValue: name) else {
                throw .invalidArgument("\(source): compression must be none, fp16 or int8, not '\(name)'")
            }
            self.compression = compression
        }
        if let map = try reader.map("selection") {
            var sel = YAMLMapReader(map: map, source: "\(source): selection")
            var policy = EdgeSelectionPolicy()
            if let value = try sel.double("max_temperature_c") { policy.maxTemperatureC = value }
            if let value = try sel.double("min_battery_percent") { policy.minBatteryPercent = value }
            policy.energyBudgetJ = try sel.double("energy_budget_j")
            policy.skipThrottled = try sel.bool("skip_throttled") ?? policy.skipThrottled
            policy.retrySeconds = try sel.double("retry_seconds") ?? policy.retrySeconds
            try sel.finish()
            selection = policy
        }
        for (key, target) in [("fit_config", \FLSettings.fitConfig), ("evaluate_config", \FLSettings.evaluateConfig)] {
            guard let map = try reader.map(key) else { continue }
            var values: [String: FLConfigValue] = [:]
            for (name, value) in map { values[name] = try FLConfigValue(yaml: value, key: "\(key).\(name)") }
            self[keyPath: target] = values
        }
        try reader.finish()
    }

    /// The strategy called `name` (Flower's class names work too: `FedAvg`, `FedTrimmedAvg`, ...).
    public static func strategyKind(_ name: String) throws(TernError) -> StrategyKind {
        let key = name.lowercased().replacingOccurrences(of: "_", with: "").replacingOccurrences(of: "-", with: "")
        guard let kind = StrategyKind(rawValue: key) else {
            throw .invalidArgument("unknown strategy '\(name)'; known: \(StrategyKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return kind
    }

    /// Checks the knobs against each other, naming the first that is wrong.
    public func validate() throws(TernError) {
        guard rounds >= 1 else { throw .invalidArgument("num_rounds must be at least 1") }
        guard (0...1).contains(fractionFit), (0...1).contains(fractionEvaluate) else {
            throw .invalidArgument("fraction_fit and fraction_evaluate must be within [0, 1]")
        }
        guard minFitClients >= 1, minEvaluateClients >= 0, minAvailableClients >= 1 else {
            throw .invalidArgument("min_fit_clients and min_available_clients must be at least 1")
        }
        if let timeout = roundTimeout, !(timeout > 0 && timeout <= 86_400) { throw .invalidArgument("round_timeout must be between 0 and 86400 seconds") }
        if let retry = selection?.retrySeconds, !(retry > 0 && retry <= 86_400) {
            throw .invalidArgument("selection.retry_seconds must be between 0 and 86400 seconds")
        }
        if (tlsCertificate == nil) != (tlsPrivateKey == nil) { throw .invalidArgument("TLS needs both a certificate and a private key") }
        _ = try FLStrategy(strategy, options: strategyOptions)
    }
}

/// Reads typed values out of a YAML mapping and remembers which keys were used, so leftovers are reported.
struct YAMLMapReader {
    let map: [String: Any]
    let source: String
    private var used: Set<String> = []

    init(map: [String: Any], source: String) {
        self.map = map
        self.source = source
    }

    private mutating func raw(_ keys: [String]) -> (String, Any)? {
        for key in keys {
            if let value = map[key] {
                used.insert(key)
                return (key, value)
            }
        }
        return nil
    }

    mutating func string(_ keys: String...) throws(TernError) -> String? {
        guard let (key, value) = raw(keys) else { return nil }
        if let text = value as? String { return text }
        if value is Int || value is Double { return "\(value)" }
        throw .invalidArgument("\(source): '\(key)' must be a string")
    }

    mutating func int(_ keys: String...) throws(TernError) -> Int? {
        guard let (key, value) = raw(keys) else { return nil }
        guard let int = value as? Int else { throw .invalidArgument("\(source): '\(key)' must be an integer") }
        return int
    }

    mutating func double(_ keys: String...) throws(TernError) -> Double? {
        guard let (key, value) = raw(keys) else { return nil }
        if let double = value as? Double { return double }
        if let int = value as? Int { return Double(int) }
        throw .invalidArgument("\(source): '\(key)' must be a number")
    }

    mutating func bool(_ keys: String...) throws(TernError) -> Bool? {
        guard let (key, value) = raw(keys) else { return nil }
        guard let bool = value as? Bool else { throw .invalidArgument("\(source): '\(key)' must be true or false") }
        return bool
    }

    mutating func map(_ keys: String...) throws(TernError) -> [String: Any]? {
        guard let (key, value) = raw(keys) else { return nil }
        if value is String { used.remove(key); return nil }  // `strategy: fedavg` is read as a string
        guard let map = value as? [String: Any] else { throw .invalidArgument("\(source): '\(key)' must be a mapping") }
        return map
    }

    func finish() throws(TernError) {
        let unknown = Set(map.keys).subtracting(used).sorted()
        if !unknown.isEmpty { throw .invalidArgument("\(source): unknown key\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", "))") }
    }
}
