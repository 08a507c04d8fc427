import Foundation
import TernTraining

/// What one client sent back from a fit: its locally trained weights, how many examples it trained
/// on (the weight FedAvg gives it) and its metrics.
public struct FitResult: Sendable {
    /// The client that trained.
    public var clientID: String
    /// The trained weights, in the global model's layout.
    public var weights: FLWeights
    /// The number of local examples, as the client reported it.
    public var numExamples: Int
    /// The client's metrics (train loss, accuracy, time, ...).
    public var metrics: [String: FLScalar]

    /// A result with these parts.
    public init(clientID: String, weights: FLWeights, numExamples: Int, metrics: [String: FLScalar] = [:]) {
        self.clientID = clientID
        self.weights = weights
        self.numExamples = numExamples
        self.metrics = metrics
    }
}

/// What one client sent back from an evaluation of the global weights on its data.
public struct EvaluateResult: Sendable {
    /// The client that evaluated.
    public var clientID: String
    /// The loss (float32 on the wire).
    public var loss: Double
    /// The number of examples it evaluated on.
    public var numExamples: Int
    /// The client's metrics (accuracy, ...).
    public var metrics: [String: FLScalar]

    /// A result with these parts.
    public init(clientID: String, loss: Double, numExamples: Int, metrics: [String: FLScalar] = [:]) {
        self.clientID = clientID
        self.loss = loss
        self.numExamples = numExamples
        self.metrics = metrics
    }
}

/// Why a client's answer did not count in a round.
public enum FLFailureReason: String, Error, Sendable, CaseIterable, Codable {
    /// The stream ended or broke before the answer came.
    case disconnected
    /// The client answered with a status other than OK (an exception in its `fit`/`evaluate`).
    case clientError = "client_error"
    /// The weights do not have the global model's layout, or do not decode.
    case badParameters = "bad_parameters"
    /// The answer did not come before the round's deadline.
    case timeout
    /// The answer was of another kind than the instruction (a protocol error).
    case protocolError = "protocol_error"
}

/// Weighted averages over clients, as Flower computes them.
public enum FLAverages {
    /// `sum(loss_i * n_i) / sum(n_i)` (Flower's `weighted_loss_avg`), nil without examples.
    public static func weightedLoss(_ results: [EvaluateResult]) -> Double? {
        let total = results.reduce(0) { $0 + $1.numExamples }
        guard total > 0 else { return nil }
        return results.reduce(0.0) { $0 + $1.loss * Double($1.numExamples) } / Double(total)
    }

    /// Each numeric metric every client reported, averaged with the clients' example counts as weights.
    public static func weightedMetrics(_ pairs: [(numExamples: Int, metrics: [String: FLScalar])]) -> [String: Double] {
        guard let first = pairs.first else { return [:] }
        var out: [String: Double] = [:]
        for key in first.metrics.keys.sorted() {
            let values = pairs.compactMap { pair in pair.metrics[key]?.number.map { (Double(pair.numExamples), $0) } }
            guard values.count == pairs.count else { continue }
            let total = values.reduce(0) { $0 + $1.0 }
            guard total > 0 else { continue }
            out[key] = values.reduce(0) { $0 + $1.0 * $1.1 } / total
        }
        return out
    }
}
