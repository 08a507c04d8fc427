/// An experiment's definition and state in one answer (`GET /v2/experiments/{name}`).
public struct ExperimentStatus: Codable, Sendable {
    /// One variant as the status shows it: where it sends requests and its current weight.
    public struct Variant: Codable, Sendable {
        /// The variant's name.
        public var name: String
        /// The repository model the variant sends requests to.
        public var model: String
        /// The model version it runs, nil for the highest ready one.
        public var version: Int64?
        /// The variant's current weight (0 for a shadow).
        public var weight: Double
        /// Whether the variant is a shadow.
        public var shadow: Bool
    }

    /// The experiment's name.
    public var name: String
    /// Whether the experiment is running, stopped or promoted.
    public var status: ExperimentState.Status
    /// Why it stopped or what its promotion did, if either happened.
    public var reason: String?
    /// The promoted variant's name, if any.
    public var winner: String?
    /// The routing key as written in the spec, e.g. "id" or "parameter:device_id".
    public var routingKey: String
    /// The hash function subjects are bucketed with.
    public var hash: SubjectHash
    /// The salt in use (the spec's, or the experiment's name), so assignments can be reproduced.
    public var salt: String
    /// The variants in the spec's order.
    public var variants: [Variant]
    /// The canary rollout, nil for a fixed split.
    public var canary: CanarySpec?
    /// The guardrails in force (the spec's, or the defaults).
    public var guardrails: GuardrailSpec

    /// Makes the status from a running experiment's spec and current state.
    public init(_ experiment: Experiment) {
        let spec = experiment.spec, state = experiment.current
        name = spec.name
        status = state.status
        reason = state.reason
        winner = state.winner
        routingKey = spec.routingKey.description
        hash = spec.hash
        salt = spec.effectiveSalt
        variants = spec.variants.map {
            Variant(name: $0.name, model: $0.model, version: $0.version, weight: $0.shadow ? 0 : state.weights[$0.name] ?? 0, shadow: $0.shadow)
        }
        canary = spec.canary
        guardrails = spec.guardrails ?? GuardrailSpec()
    }
}
