import Foundation

/// An experiment's analysis: per variant counts, error rate, latency, confidence and accuracy with
/// confidence intervals; each variant against the control (Mann-Whitney U on latency,
/// two-proportion z-tests on error rate and accuracy, with effect sizes); the sample-ratio check;
/// the guardrail verdict. `tern ab report` prints it, `/v2/experiments/{name}/report` serves it.
public struct ExperimentReport: Codable, Sendable {
    public var experiment: String
    public var status: ExperimentState.Status
    public var reason: String?
    public var winner: String?
    public var routingKey: String
    public var generatedAt: Double
    public var variants: [VariantReport]
    public var comparisons: [Comparison]
    public var sampleRatio: SampleRatio?
    public var verdict: Verdict
    public var events: [ExperimentEvent]

    public struct Latency: Codable, Sendable, Equatable {
        public var mean: Double
        public var p50: Double
        public var p95: Double
        public var p99: Double
    }

    public struct VariantReport: Codable, Sendable {
        public var name: String
        public var model: String
        public var version: Int64?
        public var weight: Double
        public var shadow: Bool
        public var requests: Int
        public var errors: Int
        public var errorRate: Double?
        /// Milliseconds, over answered requests.
        public var latencyMs: Latency?
        public var meanConfidence: Double?
        public var labelled: Int
        public var accuracy: Double?
        public var accuracyCI95: [Double]?
        /// Raw latencies for the plots of the HTML report (not encoded).
        var latencies: [Double] = []

        enum CodingKeys: String, CodingKey {
            case name, model, version, weight, shadow, requests, errors, errorRate, latencyMs, meanConfidence, labelled, accuracy, accuracyCI95
        }
    }

    public struct Comparison: Codable, Sendable {
        public var variant: String
        public var control: String
        /// Mann-Whitney U on latency; P(superiority) > 0.5 means the variant tends to be slower.
        public var latency: Statistics.MannWhitney?
        public var p99Ratio: Double?
        public var errorRate: Statistics.TwoProportions?
        public var accuracy: Statistics.TwoProportions?
    }

    public struct SampleRatio: Codable, Sendable {
        public var observed: [String: Int]
        public var expectedShare: [String: Double]
        public var chiSquare: Double
        public var degrees: Int
        public var p: Double
        /// p below 0.001: the split is not what the weights say (a routing or logging bug).
        public var mismatch: Bool
    }

    public struct Verdict: Codable, Sendable, Equatable {
        public enum Outcome: String, Codable, Sendable { case insufficientData = "insufficient_data", holding, failing }
        public var outcome: Outcome
        public var reasons: [String]
    }

    /// Builds the report from the store's data.
    public static func make(
        spec: ExperimentSpec, state: ExperimentState, data: [String: VariantData], sampleRatioData: [String: VariantData],
        events: [ExperimentEvent], now: Double = Date().timeIntervalSince1970
    ) -> ExperimentReport {
        let variants = spec.variants.map { variant -> VariantReport in
            let d = data[variant.name] ?? VariantData()
            let sorted = d.latenciesMs.sorted()
            let latency = sorted.isEmpty
                ? nil
                : Latency(
                    mean: sorted.reduce(0, +) / Double(sorted.count), p50: Statistics.quantile(sorted, 0.5)!,
                    p95: Statistics.quantile(sorted, 0.95)!, p99: Statistics.quantile(sorted, 0.99)!)
            let interval = Statistics.wilson(successes: d.correct, trials: d.labelled)
            return VariantReport(
                name: variant.name, model: variant.model, version: variant.version, weight: state.weights[variant.name] ?? 0,
                shadow: variant.shadow, requests: d.requests, errors: d.errors,
                errorRate: d.requests > 0 ? Double(d.errors) / Double(d.requests) : nil, latencyMs: latency,
                meanConfidence: d.confidenceCount > 0 ? d.confidenceSum / Double(d.confidenceCount) : nil, labelled: d.labelled,
                accuracy: d.labelled > 0 ? Double(d.correct) / Double(d.labelled) : nil, accuracyCI95: interval.map { [$0.low, $0.high] },
                latencies: sorted)
        }
        let control = spec.control
        let controlData = data[control.name] ?? VariantData()
        let controlP99 = variants.first { $0.name == control.name }?.latencyMs?.p99
        let comparisons = spec.variants.filter { $0.name != control.name }.map { variant -> Comparison in
            let d = data[variant.name] ?? VariantData()
            let p99 = variants.first { $0.name == variant.name }?.latencyMs?.p99
            return Comparison(
                variant: variant.name, control: control.name,
                latency: Statistics.mannWhitney(d.latenciesMs, controlData.latenciesMs),
                p99Ratio: p99.flatMap { value in controlP99.flatMap { $0 > 0 ? value / $0 : nil } },
                errorRate: Statistics.twoProportions(
                    successes1: controlData.errors, trials1: controlData.requests, successes2: d.errors, trials2: d.requests),
                accuracy: Statistics.twoProportions(
                    successes1: controlData.correct, trials1: controlData.labelled, successes2: d.correct, trials2: d.labelled))
        }
        var sampleRatio: SampleRatio?
        if state.status == .running {
            let served = spec.served
            let observed = served.map { sampleRatioData[$0.name]?.requests ?? 0 }
            let weights = served.map { state.weights[$0.name] ?? 0 }
            if let fit = Statistics.chiSquareFit(observed: observed, weights: weights) {
                let total = weights.reduce(0, +)
                sampleRatio = SampleRatio(
                    observed: Dictionary(uniqueKeysWithValues: zip(served.map(\.name), observed)),
                    expectedShare: Dictionary(uniqueKeysWithValues: zip(served.map(\.name), weights.map { $0 / total })),
                    chiSquare: fit.statistic, degrees: fit.degrees, p: fit.p, mismatch: fit.p < 0.001)
            }
        }
        var report = ExperimentReport(
            experiment: spec.name, status: state.status, reason: state.reason, winner: state.winner, routingKey: spec.routingKey.description,
            generatedAt: now, variants: variants, comparisons: comparisons, sampleRatio: sampleRatio,
            verdict: Verdict(outcome: .insufficientData, reasons: []), events: events)
        report.verdict = Guardrails.evaluate(report, spec: spec)
        return report
    }
}

/// The guardrails' verdict on a report: a served variant is failing when it is significantly
/// worse than the control by more than the allowed margin (error rate, latency, accuracy).
public enum Guardrails {
    public static func evaluate(_ report: ExperimentReport, spec: ExperimentSpec) -> ExperimentReport.Verdict {
        let rules = spec.guardrails ?? GuardrailSpec()
        let byName = Dictionary(uniqueKeysWithValues: report.variants.map { ($0.name, $0) })
        guard let control = byName[spec.control.name], control.requests >= rules.minSamples else {
            return .init(outcome: .insufficientData, reasons: ["the control has fewer than \(rules.minSamples) requests"])
        }
        var reasons: [String] = []
        var judged = false
        for comparison in report.comparisons {
            guard let variant = byName[comparison.variant], !variant.shadow, variant.requests >= rules.minSamples else { continue }
            judged = true
            if let margin = rules.maxErrorRateIncrease, let test = comparison.errorRate, test.difference > margin, test.p < rules.alpha {
                reasons.append("\(variant.name): error rate \(String(format: "%.1f", test.difference * 100)) points above \(control.name) (p = \(String(format: "%.2g", test.p)))")
            }
            if let ratio = rules.maxLatencyRatio, let test = comparison.latency, let p99 = comparison.p99Ratio,
                test.probabilityOfSuperiority > 0.5, test.p < rules.alpha, p99 > ratio
            {
                reasons.append("\(variant.name): slower than \(control.name) (p99 ×\(String(format: "%.2f", p99)), Mann-Whitney p = \(String(format: "%.2g", test.p)))")
            }
            if let drop = rules.maxAccuracyDrop, let test = comparison.accuracy, variant.labelled >= rules.minLabels,
                control.labelled >= rules.minLabels, -test.difference > drop, test.p < rules.alpha
            {
                reasons.append("\(variant.name): accuracy \(String(format: "%.1f", -test.difference * 100)) points below \(control.name) (p = \(String(format: "%.2g", test.p)))")
            }
        }
        if !reasons.isEmpty { return .init(outcome: .failing, reasons: reasons) }
        return judged ? .init(outcome: .holding, reasons: []) : .init(outcome: .insufficientData, reasons: ["no served variant has \(rules.minSamples) requests yet"])
    }
}
