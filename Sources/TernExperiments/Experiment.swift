import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

/// Where an experiment stands; persisted with its definition.
public struct ExperimentState: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// Splitting traffic by weight (and mirroring to shadows).
        case running
        /// Stopped (by a person or a guardrail): all traffic to the control.
        case stopped
        /// A winner was promoted: all traffic to it.
        case promoted
    }

    public var status: Status = .running
    /// Current weights of the served variants, by name.
    public var weights: [String: Double]
    public var reason: String?
    public var winner: String?
    /// When the weights last changed: the sample-ratio check looks at the records since then.
    public var weightsSince: Double
    public var canaryFailures = 0
    public var lastCanaryStep: Double

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

/// A running experiment: the virtual model that assigns each request to a variant, forwards it,
/// mirrors it to shadow variants and records the outcome.
public final class Experiment: VirtualModel {
    public let spec: ExperimentSpec
    let recorder: ExperimentRecorder
    let logger: Logger
    private let state: Mutex<(state: ExperimentState, assigner: Assigner)>
    private let requests: [String: Counter]

    public init(spec: ExperimentSpec, state: ExperimentState, recorder: ExperimentRecorder, logger: Logger) {
        self.spec = spec
        self.recorder = recorder
        self.logger = logger
        self.state = Mutex((state, Self.assigner(spec, state)))
        var requests: [String: Counter] = [:]
        for variant in spec.variants {
            requests[variant.name] = Counter(label: "tern_ab_requests_total", dimensions: [("experiment", spec.name), ("variant", variant.name)])
        }
        self.requests = requests
    }

    static func assigner(_ spec: ExperimentSpec, _ state: ExperimentState) -> Assigner {
        Assigner(hash: spec.hash, salt: spec.effectiveSalt, weights: spec.served.map { state.weights[$0.name] ?? 0 })
    }

    public var name: String { spec.name }

    public var current: ExperimentState { state.withLock { $0.state } }

    /// Changes the state (weights, status); assignments follow at once.
    public func update(_ change: (inout ExperimentState) -> Void) -> ExperimentState {
        state.withLock { value in
            let before = value.state.weights
            change(&value.state)
            if value.state.weights != before {
                value.state.weightsSince = Date().timeIntervalSince1970
                value.assigner = Self.assigner(spec, value.state)
            }
            return value.state
        }
    }

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

    /// The variant a request goes to, and its subject key.
    func assign(_ request: InferenceRequest) -> (VariantSpec, String?) {
        let key = subjectKey(request)
        let (status, winner, assigner) = state.withLock { ($0.state.status, $0.state.winner, $0.assigner) }
        switch status {
        case .stopped: return (spec.control, key)
        case .promoted: return (spec.variants.first { $0.name == winner } ?? spec.control, key)
        case .running:
            let served = spec.served
            let index = key.map { assigner.variant(for: $0) } ?? {
                // No key: a random bucket, dealt by the same weights.
                let bucket = UInt32.random(in: 0..<Assigner.buckets)
                return assigner.bounds.firstIndex { bucket < $0 } ?? served.count - 1
            }()
            return (served[min(index, served.count - 1)], key)
        }
    }

    public func handle(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void) {
        let started = ContinuousClock.now
        var forwarded = request
        let generatedID = request.id.isEmpty
        if generatedID { forwarded.id = UUID().uuidString.lowercased() }
        let (variant, subject) = assign(forwarded)
        let requestID = forwarded.id
        forwarded.modelName = variant.model
        forwarded.modelVersion = variant.version
        requests[variant.name]?.increment()
        let running = state.withLock { $0.state.status == .running }
        engine.submit(forwarded, allowInline: true) { [self] result in
            let latency = ContinuousClock.now - started
            record(result, variant: variant, requestID: requestID, subject: subject, latency: latency, shadow: false)
            completion(result.map { response in
                var response = response
                response.modelName = spec.name
                if generatedID { response.id = requestID }
                response.parameters["tern.experiment"] = .string(spec.name)
                response.parameters["tern.variant"] = .string(variant.name)
                if generatedID { response.parameters["tern.request_id"] = .string(requestID) }
                return response
            })
        }
        // Shadows get a copy once the served request is on its way; they never run on this
        // thread, and their answers are only recorded.
        guard running else { return }
        for shadow in spec.shadows {
            var copy = forwarded
            copy.modelName = shadow.model
            copy.modelVersion = shadow.version
            let shadowStarted = ContinuousClock.now
            requests[shadow.name]?.increment()
            engine.submit(copy, allowInline: false) { [self] result in
                record(result, variant: shadow, requestID: requestID, subject: subject, latency: ContinuousClock.now - shadowStarted, shadow: true)
            }
        }
    }

    private func record(
        _ result: Result<InferenceResponse, TernError>, variant: VariantSpec, requestID: String, subject: String?, latency: Duration, shadow: Bool
    ) {
        var entry = ExperimentRecord(
            time: Date().timeIntervalSince1970, experiment: spec.name, variant: variant.name, requestID: requestID, subject: subject,
            latencyUs: Int64(latency.nanoseconds / 1000), shadow: shadow)
        switch result {
        case .success(let response):
            let (confidence, prediction) = OutputReading.read(response, confidenceOutput: spec.confidenceOutput, predictionOutput: spec.predictionOutput)
            entry.confidence = confidence
            entry.prediction = prediction
        case .failure(let error):
            entry.error = error.message
        }
        recorder.record(entry)
    }
}

/// Reads what an experiment records of an answer: confidence (the largest value of a row of a
/// probability output; rows averaged) and prediction (an integer or string output, or the
/// arg-max of the confidence output; rows joined with ',').
enum OutputReading {
    static func read(_ response: InferenceResponse, confidenceOutput: String?, predictionOutput: String?) -> (Double?, String?) {
        let probabilities = confidenceOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { ($0.dataType == .fp32 || $0.dataType == .fp64) && ($0.shape.last ?? 1) > 1 }
        var confidence: Double?
        var argmax: [Int] = []
        if let probabilities, let values = doubles(probabilities), let width = probabilities.shape.last.map(Int.init), width > 0,
            values.count >= width
        {
            let rows = values.count / width
            var sum = 0.0
            for row in 0..<rows {
                let slice = values[(row * width)..<((row + 1) * width)]
                let top = slice.max()!
                sum += top
                argmax.append(slice.firstIndex(of: top)! - row * width)
            }
            confidence = sum / Double(rows)
        }
        let predicted = predictionOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { [.int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .uint64, .bytes].contains($0.dataType) }
        if let predicted, let text = strings(predicted) {
            return (confidence, text.joined(separator: ","))
        }
        return (confidence, argmax.isEmpty ? nil : argmax.map(String.init).joined(separator: ","))
    }

    static func doubles(_ tensor: Tensor) -> [Double]? {
        switch tensor.dataType {
        case .fp32: return (try? tensor.values(as: Float.self))?.map(Double.init)
        case .fp64: return try? tensor.values(as: Double.self)
        default: return nil
        }
    }

    static func strings(_ tensor: Tensor) -> [String]? {
        switch tensor.dataType {
        case .int64: return (try? tensor.values(as: Int64.self))?.map { String($0) }
        case .int32: return (try? tensor.values(as: Int32.self))?.map { String($0) }
        case .int16: return (try? tensor.values(as: Int16.self))?.map { String($0) }
        case .int8: return (try? tensor.values(as: Int8.self))?.map { String($0) }
        case .uint8: return (try? tensor.values(as: UInt8.self))?.map { String($0) }
        case .uint16: return (try? tensor.values(as: UInt16.self))?.map { String($0) }
        case .uint32: return (try? tensor.values(as: UInt32.self))?.map { String($0) }
        case .uint64: return (try? tensor.values(as: UInt64.self))?.map { String($0) }
        case .bytes: return (try? tensor.strings())?.map { String(decoding: $0, as: UTF8.self) }
        default: return nil
        }
    }
}
