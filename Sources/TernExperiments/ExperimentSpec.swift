import Foundation
import TernCore
import Yams

/// An experiment as a person writes it: `experiments/<name>.yaml` in the model repository, or the
/// JSON body of `POST /v2/experiments`. Keys are snake_case in both.
///
/// ```yaml
/// name: digits_ab                 # the virtual model clients call (default: the file's name)
/// routing_key: parameter:device_id  # id (default) | parameter:<name> | header:<name>
/// hash: murmur3                   # murmur3 (default) | fnv1a
/// variants:
///   - { name: control, model: digits_mlp, weight: 50 }
///   - { name: candidate, model: digits_weak, weight: 50 }
///   - { name: next, model: digits_next, shadow: true }   # sees a copy, never answers
/// confidence_output: probabilities
/// prediction_output: label
/// guardrails: { alpha: 0.01, min_samples: 200, max_error_rate_increase: 0.01, max_accuracy_drop: 0.02 }
/// canary: { step_weight: 10, max_weight: 50, interval_s: 30, threshold: 2 }
/// retention: { max_rows: 1000000, max_days: 30 }
/// ```
public struct ExperimentSpec: Codable, Sendable, Equatable {
    /// The experiment's name: the virtual model clients send requests to.
    public var name: String
    /// Where each request's assignment key comes from (`routing_key`, default the request id).
    public var routingKey: RoutingKey
    /// The hash function that buckets keys (`hash`, default murmur3).
    public var hash: SubjectHash
    /// Mixed into every hash so that two experiments split the same subjects independently.
    public var salt: String?
    /// The arms in order: the first served one is the control, and shadows only get copies.
    public var variants: [VariantSpec]
    /// Output whose row maximum is recorded as the confidence (default: the first FP32 output
    /// with more than one value per row, if any).
    public var confidenceOutput: String?
    /// Output recorded as the prediction, compared with feedback labels (default: the first
    /// integer or BYTES output; else the arg-max of the confidence output).
    public var predictionOutput: String?
    /// The guardrails that stop the experiment, nil for the defaults of `GuardrailSpec`.
    public var guardrails: GuardrailSpec?
    /// The progressive rollout of the second served variant, nil for a fixed split.
    public var canary: CanarySpec?
    /// Bounds on the records kept, nil to keep every record.
    public var retention: RetentionSpec?

    /// Makes a spec from its name and variants; the other settings default as in a file that leaves them out.
    public init(
        name: String, routingKey: RoutingKey = .requestID, hash: SubjectHash = .murmur3, salt: String? = nil, variants: [VariantSpec],
        confidenceOutput: String? = nil, predictionOutput: String? = nil, guardrails: GuardrailSpec? = nil, canary: CanarySpec? = nil,
        retention: RetentionSpec? = nil
    ) {
        self.name = name
        self.routingKey = routingKey
        self.hash = hash
        self.salt = salt
        self.variants = variants
        self.confidenceOutput = confidenceOutput
        self.predictionOutput = predictionOutput
        self.guardrails = guardrails
        self.canary = canary
        self.retention = retention
    }

    enum CodingKeys: String, CodingKey {
        case name, hash, salt, variants, guardrails, canary, retention
        case routingKey = "routing_key", confidenceOutput = "confidence_output", predictionOutput = "prediction_output"
    }

    /// Decodes a spec from its snake_case keys, defaulting a missing name to "", the routing key to the request id and
    /// the hash to murmur3.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        routingKey = try c.decodeIfPresent(RoutingKey.self, forKey: .routingKey) ?? .requestID
        hash = try c.decodeIfPresent(SubjectHash.self, forKey: .hash) ?? .murmur3
        salt = try c.decodeIfPresent(String.self, forKey: .salt)
        variants = try c.decode([VariantSpec].self, forKey: .variants)
        confidenceOutput = try c.decodeIfPresent(String.self, forKey: .confidenceOutput)
        predictionOutput = try c.decodeIfPresent(String.self, forKey: .predictionOutput)
        guardrails = try c.decodeIfPresent(GuardrailSpec.self, forKey: .guardrails)
        canary = try c.decodeIfPresent(CanarySpec.self, forKey: .canary)
        retention = try c.decodeIfPresent(RetentionSpec.self, forKey: .retention)
    }

    /// Parses YAML (JSON is YAML too). `defaultName` names an experiment whose file says no name.
    public static func parse(_ text: String, defaultName: String? = nil) throws(TernError) -> ExperimentSpec {
        var spec: ExperimentSpec
        do {
            spec = try YAMLDecoder().decode(ExperimentSpec.self, from: text)
        } catch let error as DecodingError {
            throw .invalidArgument("experiment\(defaultName.map { " '\($0)'" } ?? ""): \(Self.describe(error))")
        } catch {
            throw .invalidArgument("experiment\(defaultName.map { " '\($0)'" } ?? ""): not valid YAML: \(error)")
        }
        if spec.name.isEmpty, let defaultName { spec.name = defaultName }
        try spec.validate()
        return spec
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing '\(key.stringValue)'" + (context.codingPath.isEmpty ? "" : " in \(path(context))")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// Checks what decoding cannot: names, weights, one control.
    public func validate() throws(TernError) {
        func fail(_ message: String) -> TernError { .invalidArgument("experiment '\(name)': \(message)") }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "_-.".contains($0) }) else {
            throw fail("a name of letters, digits, '_', '-' or '.' is needed")
        }
        guard name != "feedback" else { throw fail("'feedback' is the API's feedback route; choose another name") }
        let served = variants.filter { !$0.shadow }
        guard served.count >= 1, variants.count >= 2 else { throw fail("two or more variants are needed (one may be a shadow)") }
        guard Set(variants.map(\.name)).count == variants.count else { throw fail("variant names must differ") }
        for variant in variants {
            guard !variant.name.isEmpty, !variant.model.isEmpty else { throw fail("every variant needs a name and a model") }
            guard variant.weight >= 0, variant.weight.isFinite else { throw fail("variant '\(variant.name)': weight must be ≥ 0") }
            if variant.shadow, variant.weight > 0 { throw fail("variant '\(variant.name)': a shadow variant has no weight") }
            if let version = variant.version, version <= 0 { throw fail("variant '\(variant.name)': version must be positive") }
        }
        guard served.contains(where: { $0.weight > 0 }) || canary != nil else { throw fail("the served variants' weights are all 0") }
        if canary != nil, served.count != 2 { throw fail("a canary has exactly two served variants: the stable one first, the canary second") }
        if let canary {
            guard canary.stepWeight > 0, canary.maxWeight > 0, canary.maxWeight <= 100, canary.intervalSeconds > 0, canary.threshold >= 1 else {
                throw fail("canary: step_weight and max_weight in 1...100, interval_s > 0, threshold ≥ 1")
            }
        }
        if let guardrails {
            guard guardrails.alpha > 0, guardrails.alpha < 1 else { throw fail("guardrails: alpha must be in (0, 1)") }
        }
    }

    /// The control: the first served variant.
    public var control: VariantSpec { variants.first { !$0.shadow }! }
    /// The variants that answer clients (not shadows), in order.
    public var served: [VariantSpec] { variants.filter { !$0.shadow } }
    /// The shadow variants, which get copies of running traffic and never answer.
    public var shadows: [VariantSpec] { variants.filter(\.shadow) }
    /// The salt the assigner hashes with: `salt` when set, else the experiment's name.
    public var effectiveSalt: String { salt ?? name }
}

/// Where the key that assigns a subject comes from.
public enum RoutingKey: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The request's `id` (a request without one is assigned at random).
    case requestID
    /// A request parameter, e.g. `device_id`.
    case parameter(String)
    /// An HTTP header or gRPC metadata key, forwarded as a parameter of that (lowercased) name.
    case header(String)

    /// Decodes a routing key from its text form (`id`, `parameter:<name>` or `header:<name>`).
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = RoutingKey(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "routing_key must be id, parameter:<name> or header:<name>, got '\(text)'"))
        }
        self = value
    }

    /// Parses `id`, `parameter:<name>` or `header:<name>` (the header name lowercased); nil for any other text.
    public init?(_ text: String) {
        if text == "id" { self = .requestID; return }
        if text.hasPrefix("parameter:"), text.count > 10 { self = .parameter(String(text.dropFirst(10))); return }
        if text.hasPrefix("header:"), text.count > 7 { self = .header(String(text.dropFirst(7)).lowercased()); return }
        return nil
    }

    /// Encodes the key as its text form, the same one `init(from:)` reads.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The key as written in a spec: `id`, `parameter:<name>` or `header:<name>`.
    public var description: String {
        switch self {
        case .requestID: "id"
        case .parameter(let name): "parameter:\(name)"
        case .header(let name): "header:\(name)"
        }
    }
}

/// One arm of an experiment: a model (and version) of the repository.
public struct VariantSpec: Codable, Sendable, Equatable {
    /// The variant's name, unique within the experiment, as reports and the `tern.variant` response parameter show it.
    public var name: String
    /// Name of the repository model the variant's requests go to.
    public var model: String
    /// The model version to run, nil for the highest ready version.
    public var version: Int64?
    /// The variant's relative share of traffic (0 for a shadow).
    public var weight: Double
    /// Whether the variant only gets copies of requests and never answers.
    public var shadow: Bool

    /// Makes a variant sending to `model` (and `version`), with a weight or as a shadow.
    public init(name: String, model: String, version: Int64? = nil, weight: Double = 0, shadow: Bool = false) {
        self.name = name
        self.model = model
        self.version = version
        self.weight = weight
        self.shadow = shadow
    }

    enum CodingKeys: String, CodingKey { case name, model, version, weight, shadow }

    /// Decodes a variant; `name` and `model` are required, weight defaults to 0 and shadow to false.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        model = try c.decode(String.self, forKey: .model)
        version = try c.decodeIfPresent(Int64.self, forKey: .version)
        weight = try c.decodeIfPresent(Double.self, forKey: .weight) ?? 0
        shadow = try c.decodeIfPresent(Bool.self, forKey: .shadow) ?? false
    }
}

/// When an experiment stops itself: a served variant significantly worse than the control.
public struct GuardrailSpec: Codable, Sendable, Equatable {
    /// Significance level of every test.
    public var alpha: Double = 0.01
    /// Requests each variant needs before any decision.
    public var minSamples: Int = 100
    /// Error rate more than this (absolute) above the control's, significantly: stop.
    public var maxErrorRateIncrease: Double? = 0.01
    /// Latency (Mann-Whitney) significantly higher with a p99 more than this ratio above: stop.
    public var maxLatencyRatio: Double? = nil
    /// Accuracy from feedback more than this (absolute) below the control's, significantly: stop.
    public var maxAccuracyDrop: Double? = 0.02
    /// Labelled requests each variant needs before accuracy is judged.
    public var minLabels: Int = 50
    /// How often the guardrails are evaluated.
    public var checkIntervalSeconds: Double = 5
    /// The latency test looks at the newest this many answered requests per variant.
    public var latencyWindow: Int = 20_000

    /// Makes the default guardrails: α 0.01, 100 samples, error rate +1 point, accuracy −2 points, checked every 5 s.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case alpha
        case minSamples = "min_samples", maxErrorRateIncrease = "max_error_rate_increase", maxLatencyRatio = "max_latency_ratio"
        case maxAccuracyDrop = "max_accuracy_drop", minLabels = "min_labels", checkIntervalSeconds = "check_interval_s"
        case latencyWindow = "latency_window"
    }

    /// Decodes guardrails from snake_case keys, taking the default for each one left out.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        alpha = try c.decodeIfPresent(Double.self, forKey: .alpha) ?? 0.01
        minSamples = try c.decodeIfPresent(Int.self, forKey: .minSamples) ?? 100
        maxErrorRateIncrease = try c.decodeIfPresent(Double.self, forKey: .maxErrorRateIncrease) ?? 0.01
        maxLatencyRatio = try c.decodeIfPresent(Double.self, forKey: .maxLatencyRatio)
        maxAccuracyDrop = try c.decodeIfPresent(Double.self, forKey: .maxAccuracyDrop) ?? 0.02
        minLabels = try c.decodeIfPresent(Int.self, forKey: .minLabels) ?? 50
        checkIntervalSeconds = try c.decodeIfPresent(Double.self, forKey: .checkIntervalSeconds) ?? 5
        latencyWindow = try c.decodeIfPresent(Int.self, forKey: .latencyWindow) ?? 20_000
    }
}

/// A progressive rollout (Flagger's analysis): the canary's weight starts at `step_weight` and
/// grows by it every `interval_s` while the guardrails hold, up to `max_weight`; `threshold`
/// failed checks send all traffic back to the stable variant.
public struct CanarySpec: Codable, Sendable, Equatable {
    /// Weight the canary starts at and gains at each step, in percent of traffic.
    public var stepWeight: Double = 10
    /// The canary's highest weight, in percent; holding there gets it promoted.
    public var maxWeight: Double = 50
    /// Seconds between two weight steps.
    public var intervalSeconds: Double = 30
    /// Failed checks that roll the canary back to the stable variant.
    public var threshold: Int = 1

    /// Makes a canary rollout from its step, maximum weight, step interval in seconds and failure threshold.
    public init(stepWeight: Double = 10, maxWeight: Double = 50, intervalSeconds: Double = 30, threshold: Int = 1) {
        self.stepWeight = stepWeight
        self.maxWeight = maxWeight
        self.intervalSeconds = intervalSeconds
        self.threshold = threshold
    }

    enum CodingKeys: String, CodingKey {
        case threshold
        case stepWeight = "step_weight", maxWeight = "max_weight", intervalSeconds = "interval_s"
    }

    /// Decodes a canary from snake_case keys, taking the default for each one left out.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stepWeight = try c.decodeIfPresent(Double.self, forKey: .stepWeight) ?? 10
        maxWeight = try c.decodeIfPresent(Double.self, forKey: .maxWeight) ?? 50
        intervalSeconds = try c.decodeIfPresent(Double.self, forKey: .intervalSeconds) ?? 30
        threshold = try c.decodeIfPresent(Int.self, forKey: .threshold) ?? 1
    }
}

/// Bounds on the metrics an experiment keeps (a small device's disk).
public struct RetentionSpec: Codable, Sendable, Equatable {
    /// Records kept per experiment at most, the oldest deleted first; nil for no limit.
    public var maxRows: Int?
    /// Days a record is kept at most; nil for no limit.
    public var maxDays: Double?

    /// Makes retention bounds by row count and by age in days (nil for no bound).
    public init(maxRows: Int? = nil, maxDays: Double? = nil) {
        self.maxRows = maxRows
        self.maxDays = maxDays
    }

    enum CodingKeys: String, CodingKey { case maxRows = "max_rows", maxDays = "max_days" }
}
