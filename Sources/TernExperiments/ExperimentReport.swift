import Foundation

/// An experiment's analysis: per variant counts, error rate, latency, confidence and accuracy with
/// confidence intervals; each variant against the control (Mann-Whitney U on latency,
/// two-proportion z-tests on error rate and accuracy, with effect sizes); the sample-ratio check;
/// the guardrail verdict. `tern ab report` prints it, `/v2/experiments/{name}/report` serves it.
public struct ExperimentReport: Codable, Sendable {
    /// The experiment's name.
    public var experiment: String
    /// Whether the experiment is running, stopped or promoted.
    public var status: ExperimentState.Status
    /// Why it stopped or what its promotion did, if either happened.
    public var reason: String?
    /// The promoted variant's name, if any.
    public var winner: String?
    /// The routing key as written in the spec, e.g. "id" or "parameter:device_id".
    public var routingKey: String
    /// When the report was made, in seconds since 1970.
    public var generatedAt: Double
    /// One entry per variant, in the spec's order.
    public var variants: [VariantReport]
    /// Each variant other than the control tested against the control.
    public var comparisons: [Comparison]
    /// The sample-ratio check on the served variants since the weights last changed, nil when not running or not
    /// computable.
    public var sampleRatio: SampleRatio?
    /// What the guardrails conclude from this report.
    public var verdict: Verdict
    /// The experiment's history, oldest first.
    public var events: [ExperimentEvent]

    /// Summary of a variant's latencies, in milliseconds.
    public struct Latency: Codable, Sendable, Equatable {
        /// The mean latency.
        public var mean: Double
        /// The median latency.
        public var p50: Double
        /// The 95th-percentile latency.
        public var p95: Double
        /// The 99th-percentile latency.
        public var p99: Double
    }

    /// One variant's numbers: traffic, errors, latency, confidence and accuracy.
    public struct VariantReport: Codable, Sendable {
        /// The variant's name.
        public var name: String
        /// The repository model the variant sends requests to.
        public var model: String
        /// The model version it runs, nil for the highest ready one.
        public var version: Int64?
        /// The variant's current weight.
        public var weight: Double
        /// Whether the variant is a shadow.
        public var shadow: Bool
        /// Requests recorded for the variant, answered and failed.
        public var requests: Int
        /// Requests that failed.
        public var errors: Int
        /// Failed requests as a fraction of all (0–1), nil without requests.
        public var errorRate: Double?
        /// Milliseconds, over answered requests.
        public var latencyMs: Latency?
        /// Mean confidence of the answered requests that had one, nil when none had.
        public var meanConfidence: Double?
        /// Answered requests that got a feedback label.
        public var labelled: Int
        /// Fraction (0–1) of the labelled requests predicted right, nil without labels.
        public var accuracy: Double?
        /// The accuracy's 95 % Wilson interval as [low, high], nil without labels.
        public var accuracyCI95: [Double]?
        /// Raw latencies for the plots of the HTML report (not encoded).
        var latencies: [Double] = []

        enum CodingKeys: String, CodingKey {
            case name, model, version, weight, shadow, requests, errors, errorRate, latencyMs, meanConfidence, labelled, accuracy, accuracyCI95
        }
    }

    /// One variant tested against the control on latency, error rate and accuracy.
    public struct Comparison: Codable, Sendable {
        /// The variant's name.
        public var variant: String
        /// The control's name.
        public var control: String
        /// Mann-Whitney U on latency; P(superiority) > 0.5 means the variant tends to be slower.
        public var latency: Statistics.MannWhitney?
        /// The variant's p99 latency divided by the control's, nil when either has none.
        public var p99Ratio: Double?
        /// The error-rate test; its difference is the variant's rate minus the control's.
        public var errorRate: Statistics.TwoProportions?
        /// The accuracy test on labelled requests; its difference is the variant's accuracy minus the control's.
        public var accuracy: Statistics.TwoProportions?
    }

    /// The sample-ratio-mismatch check: whether the served variants got the traffic their weights ask for.
    public struct SampleRatio: Codable, Sendable {
        /// Requests each served variant got since the weights last changed, by name.
        public var observed: [String: Int]
        /// Each served variant's share of traffic by weight (0–1), by name.
        public var expectedShare: [String: Double]
        /// The chi-square goodness-of-fit statistic.
        public var chiSquare: Double
        /// The test's degrees of freedom.
        public var degrees: Int
        /// The test's p-value.
        public var p: Double
        /// p below 0.001: the split is not what the weights say (a routing or logging bug).
        public var mismatch: Bool
    }

    /// The guardrails' conclusion and the reasons for it.
    public struct Verdict: Codable, Sendable, Equatable {
        /// Not enough requests to judge, every served variant within bounds, or one significantly worse.
        public enum Outcome: String, Codable, Sendable { case insufficientData = "insufficient_data", holding, failing }
        /// The conclusion.
        public var outcome: Outcome
        /// Sentences explaining a failing or insufficient-data outcome (empty when holding).
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
    /// Judges the report against the spec's guardrails (or the defaults): failing with a reason per breach, else
    /// holding or insufficient data.
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
