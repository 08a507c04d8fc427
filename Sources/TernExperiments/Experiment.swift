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
    let shadows: ShadowRunner?
    let logger: Logger
    private let state: Mutex<(state: ExperimentState, assigner: Assigner)>
    /// Per variant of `spec.variants`, by index; counted and tallied by the recorder's thread as
    /// records are written (`absorb`), not on the request path.
    private let counters: [Counter]
    private let tallies: Mutex<[VariantTally]>
    /// Indices into `spec.variants` of the served variants (in the assigner's order) and shadows.
    private let served: [Int]
    private let shadowVariants: [Int]
    /// The response parameter naming each variant, built once (a dictionary built per response
    /// cost more than the rest of the routing). The response's model name is the experiment's.
    private let responseLabels: [[String: InferParameter]]
    /// Each variant's name, model and version, by index (read without copying a VariantSpec).
    private let variantNames: [String]
    private let targets: [(model: String, version: Int64?)]
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

    /// A request as sent to its variant.
    private struct Routed: Sendable {
        var request: InferenceRequest
        var variant: Int
        var subject: String?
        var generatedID: Bool
        var mirror: Bool
        var started: ContinuousClock.Instant
    }

    private func route(_ request: InferenceRequest) -> Routed {
        let started = ContinuousClock.now
        var forwarded = request
        let generatedID = request.id.isEmpty
        if generatedID { forwarded.id = RequestIDs.next() }
        let (variant, subject, running) = assign(forwarded)
        (forwarded.modelName, forwarded.modelVersion) = targets[variant]
        let mirror = running && !shadowVariants.isEmpty && shadows != nil
        return Routed(request: forwarded, variant: variant, subject: subject, generatedID: generatedID, mirror: mirror, started: started)
    }

    /// Records the answer, names the experiment and variant in the response, mirrors to shadows.
    private func finish(_ routed: Routed, _ result: Result<InferenceResponse, TernError>) -> Result<InferenceResponse, TernError> {
        let latency = ContinuousClock.now - routed.started
        record(result, variant: routed.variant, requestID: routed.request.id, subject: routed.subject, latency: latency, shadow: false)
        if routed.mirror, let mirror = shadows {
            for shadow in shadowVariants {
                var copy = routed.request
                (copy.modelName, copy.modelVersion) = targets[shadow]
                let (requestID, subject) = (routed.request.id, routed.subject)
                mirror.submit(copy) { [self] result, elapsed in
                    record(result, variant: shadow, requestID: requestID, subject: subject, latency: elapsed, shadow: true)
                }
            }
        }
        return result.map { response in
            var response = response
            response.modelName = spec.name
            if routed.generatedID { response.id = routed.request.id }
            if response.parameters.isEmpty {
                response.parameters = responseLabels[routed.variant]
            } else {
                response.parameters.merge(responseLabels[routed.variant]) { _, label in label }
            }
            return response
        }
    }

    public func handleImmediately(_ request: InferenceRequest, engine: InferenceServer) throws(TernError) -> InferenceResponse? {
        let routed = route(request)
        let response: InferenceResponse?
        do {
            response = try engine.inferImmediately(onModel: routed.request)
        } catch {
            _ = finish(routed, .failure(error))
            throw error
        }
        // Not at once: nothing was recorded, and `handle` routes it again (to the same variant
        // when it has a key).
        guard let response else { return nil }
        return try finish(routed, .success(response)).get()
    }

    public func handle(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void) {
        let routed = route(request)
        engine.submit(toModel: routed.request, allowInline: true) { [self] result in
            completion(finish(routed, result))
        }
    }

    private func record(
        _ result: Result<InferenceResponse, TernError>, variant: Int, requestID: String, subject: String?, latency: Duration, shadow: Bool
    ) {
        var entry = ExperimentRecord(
            time: Date().timeIntervalSince1970, experiment: spec.name, variant: variantNames[variant], requestID: requestID, subject: subject,
            latencyUs: Int64(latency.nanoseconds / 1000), shadow: shadow)
        switch result {
        case .success(let response):
            let (confidence, prediction) = OutputReading.read(response, confidenceOutput: spec.confidenceOutput, predictionOutput: spec.predictionOutput)
            entry.confidence = confidence
            switch prediction {
            case .integer(let value): entry.predictedInteger = value
            case .text(let text): entry.prediction = text
            case nil: break
            }
        case .failure(let error):
            entry.error = error.message
        }
        // A record the full buffer dropped is still counted and tallied (here, at once).
        if !recorder.record(entry) { absorb(CollectionOfOne(entry)) }
    }

    /// Counts and tallies records of this experiment (the recorder's thread calls it with each
    /// written batch). Records of variants it does not have (an older experiment of the same
    /// name) are skipped.
    func absorb(_ records: some Collection<ExperimentRecord>) {
        let since = state.withLock { $0.state.weightsSince }
        var counts = [Int](repeating: 0, count: variantNames.count)
        tallies.withLock { tallies in
            for record in records {
                guard let variant = variantNames.firstIndex(of: record.variant) else { continue }
                tallies[variant].add(
                    latencyMs: record.error == nil ? Double(record.latencyUs) / 1000 : nil, confidence: record.confidence,
                    sinceWeights: record.time >= since)
                counts[variant] += 1
            }
        }
        for (variant, count) in counts.enumerated() where count > 0 { counters[variant].increment(by: count) }
    }
}

/// Reads what an experiment records of an answer: confidence (the largest value of a row of a
/// probability output; rows averaged) and prediction (an integer or string output, or the
/// arg-max of the confidence output; rows joined with ',').
enum OutputReading {
    /// A prediction: one integer (most classifiers), or text (strings, several rows).
    enum Prediction: Equatable {
        case integer(Int64)
        case text(String)
    }

    static func read(_ response: InferenceResponse, confidenceOutput: String?, predictionOutput: String?) -> (Double?, Prediction?) {
        let probabilities = confidenceOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { ($0.dataType == .fp32 || $0.dataType == .fp64) && ($0.shape.last ?? 1) > 1 }
        var confidence: Double?
        var argmax: (first: Int, rest: [Int])?
        if let probabilities, let width = probabilities.shape.last.map(Int.init), width > 0 {
            let scanned: (sum: Double, first: Int, rest: [Int])?
            switch probabilities.dataType {
            case .fp32: scanned = maxima(probabilities.data, width: width, as: Float.self)
            case .fp64: scanned = maxima(probabilities.data, width: width, as: Double.self)
            default: scanned = nil
            }
            if let scanned {
                confidence = scanned.sum / Double(1 + scanned.rest.count)
                argmax = (scanned.first, scanned.rest)
            }
        }
        let predicted = predictionOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { isLabelType($0.dataType) }
        if let predicted {
            if predicted.elementCount == 1, let value = integer(predicted) { return (confidence, .integer(value)) }
            if let text = strings(predicted) { return (confidence, .text(text.joined(separator: ","))) }
        }
        guard let argmax else { return (confidence, nil) }
        if argmax.rest.isEmpty { return (confidence, .integer(Int64(argmax.first))) }
        return (confidence, .text(([argmax.first] + argmax.rest).map(String.init).joined(separator: ",")))
    }

    /// Integer and string outputs hold labels.
    static func isLabelType(_ type: DataType) -> Bool {
        switch type {
        case .int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .uint64, .bytes: return true
        default: return false
        }
    }

    /// The value of a one-element integer tensor (nil for other types, or a uint64 beyond Int64).
    static func integer(_ tensor: Tensor) -> Int64? {
        func first<T: FixedWidthInteger>(_ type: T.Type) -> Int64? {
            guard tensor.data.count >= MemoryLayout<T>.size else { return nil }
            return tensor.data.withUnsafeBytes { Int64(exactly: $0.loadUnaligned(as: T.self)) }
        }
        switch tensor.dataType {
        case .int64: return first(Int64.self)
        case .int32: return first(Int32.self)
        case .int16: return first(Int16.self)
        case .int8: return first(Int8.self)
        case .uint8: return first(UInt8.self)
        case .uint16: return first(UInt16.self)
        case .uint32: return first(UInt32.self)
        case .uint64: return first(UInt64.self)
        default: return nil
        }
    }

    /// The sum of the rows' largest values, and the index of each row's largest value (the first
    /// row's apart: one row, the usual case, needs no array). Read in place; nil when there is
    /// not one full row.
    static func maxima<T: BinaryFloatingPoint>(_ data: Data, width: Int, as type: T.Type) -> (sum: Double, first: Int, rest: [Int])? {
        data.withUnsafeBytes { raw in
            let stride = MemoryLayout<T>.stride
            let rows = raw.count / stride / width
            guard rows > 0 else { return nil }
            func row(_ row: Int) -> (Double, Int) {
                var best = raw.loadUnaligned(fromByteOffset: row * width * stride, as: T.self), index = 0
                for column in 1..<max(width, 1) {
                    let value = raw.loadUnaligned(fromByteOffset: (row * width + column) * stride, as: T.self)
                    if value > best { (best, index) = (value, column) }
                }
                return (Double(best), index)
            }
            let (firstBest, first) = row(0)
            var sum = firstBest
            var rest: [Int] = []
            if rows > 1 {
                rest.reserveCapacity(rows - 1)
                for index in 1..<rows {
                    let (best, column) = row(index)
                    sum += best
                    rest.append(column)
                }
            }
            return (sum, first, rest)
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

extension ExperimentRecorder {
    /// An id of the kind an experiment gives requests that came without one.
    public static func generatedRequestID() -> String { RequestIDs.next() }
}

/// Ids for requests that came without one: 15 characters, 42 random bits drawn once per process
/// then a 48-bit counter, six bits a character — unique across restarts (two processes share a
/// prefix with odds of 1 in 2^42) and short enough to be a Swift small string: making, copying
/// and freeing one touches no heap. The digits are in ASCII order, so a process's ids sort by
/// their counter (which wraps after 2^48: 89 years at 100 000 requests a second).
enum RequestIDs {
    private static let prefix = UInt64.random(in: 0..<(1 << 42))
    private static let counter = Atomic<UInt64>(0)
    static let length = 15

    static func next() -> String {
        format(counter.add(1, ordering: .relaxed).newValue)
    }

    static func format(_ n: UInt64) -> String {
        let digits: StaticString = ".0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
        let low = n & ((1 << 48) - 1)
        return String(unsafeUninitializedCapacity: length) { bytes in
            for i in 0..<7 { bytes[i] = digits.utf8Start[Int((prefix >> UInt64(6 * (6 - i))) & 63)] }
            for i in 0..<8 { bytes[7 + i] = digits.utf8Start[Int((low >> UInt64(6 * (7 - i))) & 63)] }
            return length
        }
    }
}
