import Foundation
import TernCore
import TernTraining

/// Server-side differential privacy with fixed clipping (Flower's
/// `DifferentialPrivacyServerSideFixedClipping`): each client's update (its weights minus the
/// round's global weights) is scaled to an L2 norm of at most `clippingNorm` over all arrays, the
/// wrapped strategy aggregates the clipped weights, and Gaussian noise of standard deviation
/// `noiseMultiplier · clippingNorm / clients sampled` is added to every element of the result.
/// The privacy spent is counted by an `RDPAccountant` and reported as ε at `delta`.
public struct DifferentialPrivacySettings: Sendable, Equatable, Codable {
    /// σ: the noise's standard deviation relative to the clipping norm.
    public var noiseMultiplier: Double
    /// The largest L2 norm a client's update keeps.
    public var clippingNorm: Double
    /// The δ at which ε is reported.
    public var delta: Double = 1e-5
    /// The number of clients that could be sampled (the sampling rate's denominator); nil counts
    /// the clients connected when the round is sampled.
    public var population: Int?

    /// Settings with this noise multiplier and clipping norm.
    public init(noiseMultiplier: Double, clippingNorm: Double, delta: Double = 1e-5, population: Int? = nil) {
        self.noiseMultiplier = noiseMultiplier
        self.clippingNorm = clippingNorm
        self.delta = delta
        self.population = population
    }

    /// Checks the values as Flower does: σ ≥ 0, a positive norm, δ in (0, 1).
    public func validate() throws(TernError) {
        guard noiseMultiplier >= 0 else { throw .invalidArgument("differential_privacy.noise_multiplier must not be negative") }
        guard clippingNorm > 0 else { throw .invalidArgument("differential_privacy.clipping_norm must be positive") }
        guard delta > 0, delta < 1 else { throw .invalidArgument("differential_privacy.delta must be in (0, 1)") }
        if let population, population < 1 { throw .invalidArgument("differential_privacy.population must be at least 1") }
    }

    /// Scales each result's update so its L2 norm over all arrays is at most the clipping norm.
    public func clip(_ results: [FitResult], current: FLWeights) -> [FitResult] {
        results.map { result in
            var squared = 0.0
            for (layer, base) in zip(result.weights, current) {
                for (w, c) in zip(layer.values, base.values) { squared += (w - c) * (w - c) }
            }
            let norm = squared.squareRoot()
            let scale = min(1, clippingNorm / norm)  // Flower: min(1, clip / norm)
            guard scale < 1 else { return result }
            var clipped = result
            clipped.weights = zip(result.weights, current).map { layer, base in
                layer.with(values: zip(layer.values, base.values).map { c in c.1 + (c.0 - c.1) * scale })
            }
            return clipped
        }
    }

    /// The noise's standard deviation for `sampled` clients.
    public func noiseStandardDeviation(sampled: Int) -> Double {
        noiseMultiplier * clippingNorm / Double(max(sampled, 1))
    }

    /// `weights` with Gaussian noise for `sampled` clients added to every element.
    public func addNoise<G: RandomNumberGenerator>(to weights: FLWeights, sampled: Int, using generator: inout G) -> FLWeights {
        let deviation = noiseStandardDeviation(sampled: sampled)
        guard deviation > 0 else { return weights }
        return weights.map { layer in layer.with(values: layer.values.map { $0 + deviation * Gaussian.sample(using: &generator) }) }
    }
}

/// Standard normal draws (Box–Muller).
enum Gaussian {
    static func sample<G: RandomNumberGenerator>(using generator: inout G) -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &generator)
        let u2 = Double.random(in: 0..<1, using: &generator)
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}
