import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

/// A running experiment: the virtual model that assigns each request to a variant, forwards it,
/// mirrors it to shadow variants and records the outcome.
public final class Experiment: VirtualModel {
    /// The experiment's definition: variants, weights, routing key, guardrails and canary.
    public let spec: ExperimentSpec
    let recorder: ExperimentRecorder
    let shadows: ShadowRunner?
    let logger: Logger
    let state: Mutex<(state: ExperimentState, assigner: Assigner)>
    /// Per variant of `spec.variants`, by index; counted and tallied by the recorder's thread as
    /// records are written (`absorb`), not on the request path.
    let counters: [Counter]
    let tallies: Mutex<[VariantTally]>
    /// Indices into `spec.variants` of the served variants (in the assigner's order) and shadows.
    private let served: [Int]
    let shadowVariants: [Int]
    /// The response parameter naming each variant, built once (a dictionary built per response
    /// cost more than the rest of the routing). The response's model name is the experiment's.
    let responseLabels: [[String: InferParameter]]
    /// Each variant's name, model and version, by index (read without copying a VariantSpec).
    let variantNames: [String]
    let targets: [(model: String, version: Int64?)]
    private let salt: String

    init(spec: ExperimentSpec, state: ExperimentState, recorder: ExperimentRecorder, shadows: ShadowRunner?, logger: Logger) {
        self.spec = spec
        self.recorder = recorder
        self.shadows = spec.shadows.isEmpty ? nil : shadows
        self.logger = logger
        self.state = Mutex((state, Self.assigner(spec, state)))
        counters = spec.variants.map { Counter(label: "tern_ab_requests_total", dimensions: [("experiment", spec.name), ("variant", $0.name)]) }
        served = spec.variants.indices.filter { !spec.variants[$0].shadow }
        shadowVariants = spec.variants.indices.filter { spec.variants[$0].shadow }
        responseLabels = spec.variants.map { ["tern.variant": .string($0.name)] }
        variantNames = spec.variants.map(\.name)
        targets = spec.variants.map { ($0.model, $0.version) }
        salt = spec.effectiveSalt
        let window = (spec.guardrails ?? GuardrailSpec()).latencyWindow
        tallies = Mutex(spec.variants.map { _ in VariantTally(window: window) })
    }

    static func assigner(_ spec: ExperimentSpec, _ state: ExperimentState) -> Assigner {
        Assigner(hash: spec.hash, salt: spec.effectiveSalt, weights: spec.served.map { state.weights[$0.name] ?? 0 })
    }

    /// The name clients send requests to, the experiment's own.
    public var name: String { spec.name }

    /// A copy of the experiment's state now: status, weights and canary progress.
    public var current: ExperimentState { state.withLock { $0.state } }

    /// Changes the state (weights, status); assignments follow at once.
    public func update(_ change: (inout ExperimentState) -> Void) -> ExperimentState {
        state.withLock { value in
            let before = value.state.weights
            change(&value.state)
            if value.state.weights != before {
                value.state.weightsSince = Date().timeIntervalSince1970
                value.assigner = Self.assigner(spec, value.state)
                // Records taken before the change and tallied after it are told apart by time.
                tallies.withLock { tallies in
                    for index in tallies.indices { tallies[index].requestsSinceWeights = 0 }
                }
            }
            return value.state
        }
    }

    /// What the guardrails judge, from the in-memory tallies since this server started (plus the
    /// labelled counts from the store): all requests, and those since the weights last changed.
    func tallyData(labelled: [String: (labelled: Int, correct: Int)]) -> (all: [String: VariantData], sinceWeights: [String: VariantData]) {
        let tallies = self.tallies.withLock { $0 }
        var all: [String: VariantData] = [:], recent: [String: VariantData] = [:]
        for (variant, tally) in zip(spec.variants, tallies) {
            all[variant.name] = tally.data(shadow: variant.shadow, labelled: labelled[variant.name])
            var since = VariantData()
            since.requests = tally.requestsSinceWeights
            recent[variant.name] = since
        }
        return (all, recent)
    }

    /// The model and version whose metadata the experiment's name shows: the variant every request goes to when not
    /// splitting, else the control.
    public var presented: (model: String, version: Int64?) {
        let variant = servingVariantIfFixed ?? spec.control
        return (variant.model, variant.version)
    }

    /// The variant every request goes to when the experiment is not splitting.
    private var servingVariantIfFixed: VariantSpec? {
        let current = self.current
        switch current.status {
        case .running: return nil
        case .stopped: return spec.control
        case .promoted: return spec.variants.first { $0.name == current.winner } ?? spec.control
        }
    }

    /// The subject key of a request, nil when it has none.
    func subjectKey(_ request: InferenceRequest) -> String? {
        switch spec.routingKey {
        case .requestID: return request.id.isEmpty ? nil : request.id
        case .parameter(let name), .header(let name):
            guard let value = request.parameters[name] else { return nil }
            switch value {
            case .string(let text): return text
            case .int64(let number): return String(number)
            case .bool(let flag): return String(flag)
            case .double(let number): return String(number)
            default: return nil
            }
        }
    }

    /// The variant a request goes to (its index in `spec.variants`), its subject key, and
    /// whether the experiment is splitting.
    func assign(_ request: InferenceRequest) -> (variant: Int, subject: String?, running: Bool) {
        let key = subjectKey(request)
        // No key: the request id (unique, generated when absent) stands in, so the split is
        // random across requests and still reproducible from the records. The hash and salt
        // never change: the bucket is found outside the lock, which only reads the bounds.
        let bucket = Assigner.bucket(key ?? request.id, hash: spec.hash, salt: salt)
        return state.withLock { value in
            switch value.state.status {
            case .stopped: return (served[0], key, false)  // the control is the first served variant
            case .promoted: return (spec.variants.firstIndex { $0.name == value.state.winner } ?? served[0], key, false)
            case .running: return (served[min(value.assigner.variant(inBucket: bucket), served.count - 1)], key, true)
            }
        }
    }
}
