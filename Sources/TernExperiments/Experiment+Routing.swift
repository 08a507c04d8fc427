import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

extension Experiment {
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

    /// Sends the request to its assigned variant and calls `completion` with the answer, labelled with the variant,
    /// once it is recorded.
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
