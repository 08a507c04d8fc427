/// An experiment's definition and state in one answer (`GET /v2/experiments/{name}`).
public struct ExperimentStatus: Codable, Sendable {
    public struct Variant: Codable, Sendable {
        public var name: String
        public var model: String
        public var version: Int64?
        public var weight: Double
        public var shadow: Bool
    }

    public var name: String
    public var status: ExperimentState.Status
    public var reason: String?
    public var winner: String?
    public var routingKey: String
    public var hash: SubjectHash
    public var salt: String
    public var variants: [Variant]
    public var canary: CanarySpec?
    public var guardrails: GuardrailSpec

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
