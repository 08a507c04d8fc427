import Foundation
import TernCore
import TernTraining

/// The aggregation rules Tern's coordinator offers, with Flower's names and defaults.
public enum StrategyKind: String, Sendable, CaseIterable, Codable {
    /// Average weighted by `num_examples` (Flower's `FedAvg`).
    case fedavg
    /// FedAvg whose clients add a proximal term; sends `proximal_mu` in every `FitIns.config`.
    case fedprox
    /// FedAvg with server momentum and a server learning rate (`FedAvgM`).
    case fedavgm
    /// FedAvg's average as a pseudo-gradient for Adam on the server (`FedAdam`).
    case fedadam
    /// The same with Yogi's second moment (`FedYogi`).
    case fedyogi
    /// The same with Adagrad's accumulated second moment (`FedAdagrad`).
    case fedadagrad
    /// The element-wise median of the clients' weights (`FedMedian`).
    case fedmedian
    /// The element-wise mean after cutting a fraction at each end (`FedTrimmedAvg`).
    case fedtrimmedavg
    /// The one client whose weights are closest to their neighbours' (`Krum`).
    case krum
    /// The average of the `num_clients_to_keep` best-scored clients (Krum with a keep count).
    case multikrum
}

/// The strategies' tunables, named as Flower names its constructor arguments; each default is Flower's.
public struct StrategyOptions: Sendable, Equatable, Codable {
    /// FedProx's μ, sent to clients as `proximal_mu`.
    public var proximalMu: Double = 0.1
    /// FedAvgM's server learning rate.
    public var serverLearningRate: Double = 1.0
    /// FedAvgM's momentum.
    public var serverMomentum: Double = 0.0
    /// FedOpt's server step η (nil: the strategy's own default, 0.1 for Adam and Adagrad, 0.01 for Yogi).
    public var eta: Double?
    /// FedOpt's β₁ (nil: 0.9, Adagrad 0).
    public var beta1: Double?
    /// FedOpt's β₂ (nil: 0.99).
    public var beta2: Double?
    /// FedOpt's τ, the adaptivity floor (nil: 1e-9, Yogi 1e-3).
    public var tau: Double?
    /// FedTrimmedAvg's fraction cut at each end.
    public var trimBeta: Double = 0.2
    /// Krum's assumed number of Byzantine clients.
    public var numMaliciousClients: Int = 0
    /// Multi-Krum's number of clients averaged (Krum: 0).
    public var numClientsToKeep: Int = 0
    /// Server-side differential privacy around the rule (clip, aggregate, add noise); nil: none.
    public var differentialPrivacy: DifferentialPrivacySettings?

    /// Flower's defaults.
    public init() {}
}

/// What a strategy carries from round to round: FedOpt's first and second moments and FedAvgM's
/// momentum, one vector per array (empty for the stateless rules).
public struct FLStrategyState: Sendable, Equatable {
    /// FedOpt's m.
    public var firstMoment: [[Double]]
    /// FedOpt's v.
    public var secondMoment: [[Double]]
    /// FedAvgM's momentum.
    public var momentum: [[Double]]

    /// A state with these vectors.
    public init(firstMoment: [[Double]] = [], secondMoment: [[Double]] = [], momentum: [[Double]] = []) {
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
        self.momentum = momentum
    }
}

/// An aggregation rule with its server-side state (momentum, optimiser moments): a value the round
/// engine owns. Each rule follows `flwr.server.strategy` in 1.42, checked against it in the tests.
public struct FLStrategy: Sendable {
    /// Which rule.
    public let kind: StrategyKind
    /// Its tunables.
    public let options: StrategyOptions
    private var firstMoment: [[Double]] = []
    private var secondMoment: [[Double]] = []
    private var momentum: [[Double]] = []

    /// The server-side state a restarted coordinator needs (optimiser moments, momentum), per array.
    public var state: FLStrategyState {
        get { FLStrategyState(firstMoment: firstMoment, secondMoment: secondMoment, momentum: momentum) }
        set {
            firstMoment = newValue.firstMoment
            secondMoment = newValue.secondMoment
            momentum = newValue.momentum
        }
    }

    /// A fresh strategy of this kind.
    public init(_ kind: StrategyKind, options: StrategyOptions = StrategyOptions()) throws(TernError) {
        switch kind {
        case .fedtrimmedavg where !(0..<0.5).contains(options.trimBeta):
            throw .invalidArgument("trim_beta must be in [0, 0.5), not \(options.trimBeta)")
        case .krum where options.numMaliciousClients < 0, .multikrum where options.numMaliciousClients < 0:
            throw .invalidArgument("num_malicious_clients cannot be negative")
        case .multikrum where options.numClientsToKeep <= 0:
            throw .invalidArgument("multikrum needs num_clients_to_keep > 0")
        default: break
        }
        try options.differentialPrivacy?.validate()
        self.kind = kind
        self.options = options
    }

    /// Keys this strategy adds to every round's `FitIns.config` (FedProx: `proximal_mu`).
    public var fitConfig: [String: FLScalar] {
        kind == .fedprox ? ["proximal_mu": .double(options.proximalMu)] : [:]
    }

    /// The next global weights from this round's results; `current` is the global model the clients
    /// started from. Results must share `current`'s layout (the engine drops those that do not).
    /// With differential privacy the updates are clipped first and noise for `sampled` clients
    /// (default: as many as there are results) is added to the outcome.
    public mutating func aggregate(round: Int, current: FLWeights, results: [FitResult], sampled: Int? = nil) throws(TernError) -> FLWeights {
        guard !results.isEmpty else { throw .invalidArgument("no results to aggregate") }
        guard results.contains(where: { $0.numExamples > 0 }) || [.fedmedian, .fedtrimmedavg, .krum].contains(kind) else {
            throw .invalidArgument("every client reported 0 examples: there is no weighted average")
        }
        for result in results {
            if let mismatch = result.weights.layoutMismatch(expected: current) {
                throw .invalidArgument("client \(result.clientID): \(mismatch)")
            }
        }
        guard let privacy = options.differentialPrivacy else { return rule(round: round, current: current, results: results) }
        let aggregated = rule(round: round, current: current, results: privacy.clip(results, current: current))
        var generator = SystemRandomNumberGenerator()
        return privacy.addNoise(to: aggregated, sampled: sampled ?? results.count, using: &generator)
    }

    private mutating func rule(round: Int, current: FLWeights, results: [FitResult]) -> FLWeights {
        switch kind {
        case .fedavg, .fedprox:
            return Aggregation.weightedMean(results)
        case .fedavgm:
            return fedAvgM(round: round, current: current, average: Aggregation.weightedMean(results))
        case .fedadam, .fedyogi, .fedadagrad:
            return fedOpt(round: round, current: current, average: Aggregation.weightedMean(results))
        case .fedmedian:
            return Aggregation.elementwise(results.map(\.weights)) { Aggregation.median($0) }
        case .fedtrimmedavg:
            let cut = options.trimBeta
            return Aggregation.elementwise(results.map(\.weights)) { Aggregation.trimmedMean($0, proportionToCut: cut) }
        case .krum:
            return Aggregation.krum(results, malicious: options.numMaliciousClients, keep: 0)
        case .multikrum:
            return Aggregation.krum(results, malicious: options.numMaliciousClients, keep: options.numClientsToKeep)
        }
    }

    private mutating func fedAvgM(round: Int, current: FLWeights, average: FLWeights) -> FLWeights {
        let lr = options.serverLearningRate
        let beta = options.serverMomentum
        guard beta != 0 || lr != 1 else { return average }  // Flower: no server optimiser then
        var pseudo = zip(current, average).map { cur, avg in zip(cur.values, avg.values).map { $0 - $1 } }
        if beta > 0 {
            if round > 1, momentum.count == pseudo.count {
                momentum = zip(momentum, pseudo).map { m, g in zip(m, g).map { beta * $0 + $1 } }
            } else {
                momentum = pseudo
            }
            pseudo = momentum
        }
        return zip(current, pseudo).map { cur, g in cur.with(values: zip(cur.values, g).map { $0 - lr * $1 }) }
    }

    private mutating func fedOpt(round: Int, current: FLWeights, average: FLWeights) -> FLWeights {
        let eta = options.eta ?? (kind == .fedyogi ? 1e-2 : 1e-1)
        let beta1 = kind == .fedadagrad ? (options.beta1 ?? 0) : (options.beta1 ?? 0.9)
        let beta2 = options.beta2 ?? 0.99
        let tau = options.tau ?? (kind == .fedyogi ? 1e-3 : 1e-9)
        let delta = zip(average, current).map { avg, cur in zip(avg.values, cur.values).map { $0 - $1 } }
        if firstMoment.count != delta.count { firstMoment = delta.map { [Double](repeating: 0, count: $0.count) } }
        if secondMoment.count != delta.count { secondMoment = delta.map { [Double](repeating: 0, count: $0.count) } }
        firstMoment = zip(firstMoment, delta).map { m, d in zip(m, d).map { beta1 * $0 + (1 - beta1) * $1 } }
        switch kind {
        case .fedadam:
            secondMoment = zip(secondMoment, delta).map { v, d in zip(v, d).map { beta2 * $0 + (1 - beta2) * $1 * $1 } }
        case .fedyogi:
            secondMoment = zip(secondMoment, delta).map { v, d in
                zip(v, d).map { v, d in v - (1 - beta2) * d * d * Aggregation.sign(v - d * d) }
            }
        default:
            secondMoment = zip(secondMoment, delta).map { v, d in zip(v, d).map { $0 + $1 * $1 } }
        }
        var step = eta
        if kind == .fedadam {  // Flower's bias correction counts from round + 1
            let r = Double(round) + 1
            step = eta * (1 - Foundation.pow(beta2, r)).squareRoot() / (1 - Foundation.pow(beta1, r))
        }
        return (0..<current.count).map { layer in
            let cur = current[layer]
            let m = firstMoment[layer]
            let v = secondMoment[layer]
            return cur.with(values: (0..<cur.count).map { cur.values[$0] + step * m[$0] / (v[$0].squareRoot() + tau) })
        }
    }
}
