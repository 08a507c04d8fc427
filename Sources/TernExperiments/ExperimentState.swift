import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

/// Where an experiment stands; persisted with its definition.
public struct ExperimentState: Codable, Sendable, Equatable {
    /// Whether the experiment is splitting traffic, stopped, or has promoted a winner.
    public enum Status: String, Codable, Sendable {
        /// Splitting traffic by weight (and mirroring to shadows).
        case running
        /// Stopped (by a person or a guardrail): all traffic to the control.
        case stopped
        /// A winner was promoted: all traffic to it.
        case promoted
    }

    /// Whether traffic is being split, sent to the control, or sent to the winner.
    public var status: Status = .running
    /// Current weights of the served variants, by name.
    public var weights: [String: Double]
    /// Why the experiment stopped or what its promotion did, nil while it runs undisturbed.
    public var reason: String?
    /// Name of the promoted variant, nil until one is promoted.
    public var winner: String?
    /// When the weights last changed: the sample-ratio check looks at the records since then.
    public var weightsSince: Double
    /// Canary checks that have failed so far (a passing check does not reset it); the canary rolls back at its
    /// threshold.
    public var canaryFailures = 0
    /// When the canary's weight last stepped up (seconds since 1970); starts at the experiment's creation.
    public var lastCanaryStep: Double

    /// Makes the starting state of `spec` at time `now`: running, with the spec's weights (a canary's first step
    /// instead when it has one).
    public init(spec: ExperimentSpec, now: Double) {
        var weights: [String: Double] = [:]
        for variant in spec.served { weights[variant.name] = variant.weight }
        if let canary = spec.canary {
            weights[spec.served[0].name] = 100 - canary.stepWeight
            weights[spec.served[1].name] = canary.stepWeight
        }
        self.weights = weights
        weightsSince = now
        lastCanaryStep = now
    }
}
