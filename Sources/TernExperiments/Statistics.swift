import Foundation

/// The statistics experiment reports use, computed here (checked against scipy in the tests).
public enum Statistics {
    /// P(Z ≤ z) for a standard normal Z.
    public static func normalCDF(_ z: Double) -> Double { 0.5 * erfc(-z / 2.0.squareRoot()) }

    /// Two-sided p-value of a standard normal statistic.
    public static func twoSidedP(_ z: Double) -> Double { min(1, erfc(abs(z) / 2.0.squareRoot())) }

    /// P(X ≥ x) for X chi-square distributed with `degrees` degrees of freedom.
    public static func chiSquareSurvival(_ x: Double, degrees: Int) -> Double {
        guard x > 0 else { return 1 }
        return upperRegularizedGamma(Double(degrees) / 2, x / 2)
    }

    /// Q(a, x) = Γ(a, x) / Γ(a): a power series below a + 1, Lentz's continued fraction above.
    static func upperRegularizedGamma(_ a: Double, _ x: Double) -> Double {
        let logPrefix = -x + a * log(x) - lgamma(a)
        if x < a + 1 {
            var term = 1 / a, sum = term, n = a
            for _ in 0..<10_000 {
                n += 1
                term *= x / n
                sum += term
                if abs(term) < abs(sum) * 1e-15 { break }
            }
            return max(0, 1 - sum * exp(logPrefix))
        }
        let tiny = 1e-300
        var b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d
        for i in 1..<10_000 {
            let an = -Double(i) * (Double(i) - a)
            b += 2
            d = an * d + b
            if abs(d) < tiny { d = tiny }
            c = b + an / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-15 { break }
        }
        return min(1, exp(logPrefix) * h)
    }

    /// The `q` quantile (0...1) with linear interpolation between order statistics (numpy's
    /// default). `sorted` must be ascending.
    public static func quantile(_ sorted: [Double], _ q: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let position = q * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down)), upper = min(lower + 1, sorted.count - 1)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
    }

    /// Wilson score interval for `successes` out of `trials` at 95 % (z = 1.959964).
    public static func wilson(successes: Int, trials: Int, z: Double = 1.959963984540054) -> (low: Double, high: Double)? {
        guard trials > 0 else { return nil }
        let n = Double(trials), p = Double(successes) / n
        let denominator = 1 + z * z / n
        let centre = (p + z * z / (2 * n)) / denominator
        let half = z * (p * (1 - p) / n + z * z / (4 * n * n)).squareRoot() / denominator
        return (max(0, centre - half), min(1, centre + half))
    }

    /// The result of a Mann-Whitney U test comparing two samples, with its effect sizes.
    public struct MannWhitney: Sendable, Equatable, Codable {
        /// U of the first sample (the number of pairs where it is larger, ties counting ½).
        public var u: Double
        /// The normal approximation's z score (continuity-corrected), positive when the first sample tends to be
        /// larger.
        public var z: Double
        /// The two-sided p-value.
        public var p: Double
        /// P(first > second) + ½ P(tie): 0.5 when neither tends to be larger.
        public var probabilityOfSuperiority: Double
        /// Rank-biserial correlation, 2·P(superiority) − 1, in −1...1.
        public var rankBiserial: Double
    }

    /// Two-sided Mann-Whitney U test with the normal approximation, tie correction and continuity
    /// correction (scipy's `mannwhitneyu(x, y, method="asymptotic")`).
    public static func mannWhitney(_ x: [Double], _ y: [Double]) -> MannWhitney? {
        let n1 = x.count, n2 = y.count
        guard n1 > 0, n2 > 0 else { return nil }
        let all = (x.map { ($0, 0) } + y.map { ($0, 1) }).sorted { $0.0 < $1.0 }
        let n = all.count
        var rankSumX = 0.0, tieTerm = 0.0
        var i = 0
        while i < n {
            var j = i
            while j + 1 < n && all[j + 1].0 == all[i].0 { j += 1 }
            let rank = Double(i + j + 2) / 2  // ranks are 1-based
            let t = Double(j - i + 1)
            if t > 1 { tieTerm += t * t * t - t }
            for k in i...j where all[k].1 == 0 { rankSumX += rank }
            i = j + 1
        }
        let a = Double(n1), b = Double(n2), total = Double(n)
        let u1 = rankSumX - a * (a + 1) / 2
        let mean = a * b / 2
        let variance = a * b / 12 * ((total + 1) - tieTerm / (total * (total - 1)))
        let superiority = u1 / (a * b)
        guard variance > 0 else {
            return MannWhitney(u: u1, z: 0, p: 1, probabilityOfSuperiority: superiority, rankBiserial: 2 * superiority - 1)
        }
        let u = max(u1, a * b - u1)
        let z = (u - mean - 0.5) / variance.squareRoot()
        return MannWhitney(
            u: u1, z: u1 >= mean ? z : -z, p: min(1, erfc(z / 2.0.squareRoot())), probabilityOfSuperiority: superiority,
            rankBiserial: 2 * superiority - 1)
    }

    /// The result of a two-proportion z-test, with Cohen's h as the effect size.
    public struct TwoProportions: Sendable, Equatable, Codable {
        /// Second minus first proportion.
        public var difference: Double
        /// The z score of the difference, from the pooled standard error.
        public var z: Double
        /// The two-sided p-value.
        public var p: Double
        /// Cohen's h = 2·asin√p₂ − 2·asin√p₁.
        public var cohensH: Double
    }

    /// Pooled two-proportion z-test (the same p-value as a 2×2 chi-square without Yates's
    /// correction).
    public static func twoProportions(successes1: Int, trials1: Int, successes2: Int, trials2: Int) -> TwoProportions? {
        guard trials1 > 0, trials2 > 0 else { return nil }
        let p1 = Double(successes1) / Double(trials1), p2 = Double(successes2) / Double(trials2)
        let pooled = Double(successes1 + successes2) / Double(trials1 + trials2)
        let standardError = (pooled * (1 - pooled) * (1 / Double(trials1) + 1 / Double(trials2))).squareRoot()
        let h = 2 * asin(p2.squareRoot()) - 2 * asin(p1.squareRoot())
        guard standardError > 0 else { return TwoProportions(difference: p2 - p1, z: 0, p: 1, cohensH: h) }
        let z = (p2 - p1) / standardError
        return TwoProportions(difference: p2 - p1, z: z, p: twoSidedP(z), cohensH: h)
    }

    /// The result of a chi-square goodness-of-fit test.
    public struct ChiSquare: Sendable, Equatable, Codable {
        /// The chi-square statistic, the sum of (observed − expected)² / expected.
        public var statistic: Double
        /// Degrees of freedom: the categories with a non-zero weight, minus one.
        public var degrees: Int
        /// The probability of a statistic at least this large under the expected proportions.
        public var p: Double
    }

    /// Goodness of fit of observed counts to expected proportions (`weights`, any scale): the
    /// sample-ratio-mismatch check (scipy's `chisquare`).
    public static func chiSquareFit(observed: [Int], weights: [Double]) -> ChiSquare? {
        let total = Double(observed.reduce(0, +)), weightSum = weights.reduce(0, +)
        guard observed.count == weights.count, observed.count >= 2, total > 0, weightSum > 0 else { return nil }
        var statistic = 0.0
        for (count, weight) in zip(observed, weights) {
            let expected = total * weight / weightSum
            guard expected > 0 else { continue }
            statistic += (Double(count) - expected) * (Double(count) - expected) / expected
        }
        let degrees = weights.filter { $0 > 0 }.count - 1
        guard degrees > 0 else { return nil }
        return ChiSquare(statistic: statistic, degrees: degrees, p: chiSquareSurvival(statistic, degrees: degrees))
    }
}
