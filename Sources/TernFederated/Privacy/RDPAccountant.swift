import Foundation
import TernTraining

/// Privacy spent by rounds of the sampled Gaussian mechanism, counted in Rényi differential privacy
/// (RDP) and converted to (ε, δ). Each round is a Poisson-sampled Gaussian release (sampling rate
/// q = clients sampled / population, noise multiplier σ); RDP adds up over rounds, and ε at δ is the
/// best over a fixed set of orders α. The per-order RDP is Mironov, Talwar and Zhang's (2019)
/// bound for the sampled Gaussian mechanism (integer and fractional α); the conversion is
/// Canonne, Kamath and Steinke's: ε = RDP(α) + log(1 − 1/α) − log(δ·α)/(α − 1). The orders are
/// those Google's `dp-accounting` uses by default, so the two report the same ε.
public struct RDPAccountant: Sendable, Equatable, Codable {
    /// The orders α: 1.1 to 10.9 in steps of 0.1, 11 to 63, then 128, 256, 512, 1024.
    public static let orders: [Double] = {
        let fine: [Double] = (1..<100).map { (step: Int) -> Double in 1 + Double(step) / 10 }
        let whole: [Double] = (11..<64).map { (order: Int) -> Double in Double(order) }
        return fine + whole + [128, 256, 512, 1024]
    }()

    /// The RDP spent so far at each of `orders`.
    public private(set) var rdp: [Double] = Array(repeating: 0, count: RDPAccountant.orders.count)
    /// The number of rounds composed.
    public private(set) var releases = 0

    /// An accountant that has spent nothing.
    public init() {}

    /// Adds `count` rounds with sampling rate `q` and noise multiplier `sigma`.
    public mutating func compose(samplingRate q: Double, noiseMultiplier sigma: Double, count: Int = 1) {
        for (index, order) in Self.orders.enumerated() {
            rdp[index] += Double(count) * Self.sampledGaussianRDP(q: q, sigma: sigma, order: order)
        }
        releases += count
    }

    /// The smallest ε for which the rounds so far are (ε, δ)-differentially private.
    public func epsilon(delta: Double) -> Double {
        guard delta > 0 else { return rdp.allSatisfy { $0 == 0 } ? 0 : .infinity }
        var best = Double.infinity
        for (order, r) in zip(Self.orders, rdp) {
            let epsilon: Double
            if r < 0 {
                epsilon = 0
            } else if delta * delta + Foundation.expm1(-r) > 0 {
                epsilon = 0  // δ alone already covers it
            } else if order > 1.01 {
                epsilon = r + Foundation.log1p(-1 / order) - Foundation.log(delta * order) / (order - 1)
            } else {
                epsilon = .infinity
            }
            best = min(best, epsilon)
        }
        return max(0, best)
    }

    /// RDP at order `order` of one Poisson-sampled Gaussian release.
    static func sampledGaussianRDP(q: Double, sigma: Double, order: Double) -> Double {
        if q <= 0 { return 0 }
        if sigma <= 0 { return .infinity }
        if q >= 1 { return order / (2 * sigma * sigma) }  // the Gaussian mechanism, no amplification
        if order == .infinity { return .infinity }
        let logA = order.rounded() == order ? logAInteger(q: q, sigma: sigma, order: Int(order)) : logAFractional(q: q, sigma: sigma, order: order)
        return logA / (order - 1)
    }

    /// log A_α for integer α: log Σₖ C(α, k) (1 − q)^(α−k) qᵏ exp((k² − k) / 2σ²).
    private static func logAInteger(q: Double, sigma: Double, order: Int) -> Double {
        var total = -Double.infinity
        for k in 0...order {
            let term = logBinomial(Double(order), k) + Double(k) * Foundation.log(q) + Double(order - k) * Foundation.log1p(-q)
                + Double(k * k - k) / (2 * sigma * sigma)
            total = logAdd(total, term)
        }
        return total
    }

    /// log A_α for fractional α: the two series split at z₀ = σ² log(1/q − 1) + 1/2, whose terms
    /// carry the Gaussian tail mass on each side of z₀; summed until both terms fall below e⁻³⁰.
    private static func logAFractional(q: Double, sigma: Double, order: Double) -> Double {
        var positive = -Double.infinity
        var negative = -Double.infinity
        let z0 = sigma * sigma * Foundation.log(1 / q - 1) + 0.5
        var coefficient = 1.0  // C(α, i), built up term by term (it changes sign past α + 1)
        var i = 0.0
        while true {
            let j = order - i
            let logCoefficient = Foundation.log(abs(coefficient))
            let t0 = logCoefficient + i * Foundation.log(q) + j * Foundation.log1p(-q)
            let t1 = logCoefficient + j * Foundation.log(q) + i * Foundation.log1p(-q)
            let e0 = Foundation.log(0.5) + logErfc((i - z0) / (2.0.squareRoot() * sigma))
            let e1 = Foundation.log(0.5) + logErfc((z0 - j) / (2.0.squareRoot() * sigma))
            let s0 = t0 + (i * i - i) / (2 * sigma * sigma) + e0
            let s1 = t1 + (j * j - j) / (2 * sigma * sigma) + e1
            if coefficient > 0 {
                positive = logAdd(logAdd(positive, s0), s1)
            } else {
                negative = logAdd(logAdd(negative, s0), s1)
            }
            if max(s0, s1) < -30 || i > 10_000 { break }
            coefficient *= (order - i) / (i + 1)
            i += 1
        }
        guard negative > -.infinity else { return positive }
        guard positive > negative else { return -.infinity }
        return positive + Foundation.log(-Foundation.expm1(negative - positive))
    }

    private static func logBinomial(_ n: Double, _ k: Int) -> Double {
        Foundation.lgamma(n + 1) - Foundation.lgamma(Double(k) + 1) - Foundation.lgamma(n - Double(k) + 1)
    }

    private static func logAdd(_ a: Double, _ b: Double) -> Double {
        let high = max(a, b), low = min(a, b)
        if low == -.infinity { return high }
        return high + Foundation.log1p(Foundation.exp(low - high))
    }

    /// log(erfc(x)), accurate where erfc underflows (x large): its asymptotic series there.
    static func logErfc(_ x: Double) -> Double {
        if x < 25 { return Foundation.log(Foundation.erfc(x)) }
        let inverse = 1 / (x * x)
        let series = 1 - inverse / 2 + 3 * inverse * inverse / 4 - 15 * inverse * inverse * inverse / 8
        return -x * x - Foundation.log(x * Double.pi.squareRoot()) + Foundation.log(series)
    }
}
