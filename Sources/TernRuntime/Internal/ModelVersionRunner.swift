import CoreMetrics
import Foundation
import Logging
import TernCore

/// One loaded version of a model: its instances, request validation, post-processing and the
/// statistics and metrics of its requests.
final class ModelVersionRunner: Sendable {
    let name: String
    let version: Int64
    let config: ModelConfig
    let signature: ModelSignature
    let statistics: StatisticsRecorder
    private let pool: InstancePool
    private let validator: RequestValidator
    private let metrics: InferenceMetrics
    /// Class labels per output name, from `label_filename`.
    private let labels: [String: [String]]

    init(name: String, version: Int64, config: ModelConfig, instances: [any ModelInstance], labels: [String: [String]]) {
        self.name = name
        self.version = version
        self.config = config
        self.signature = instances[0].signature
        self.statistics = StatisticsRecorder(name: name, version: version)
        self.pool = InstancePool(instances: instances, label: "\(name).\(version)")
        self.validator = RequestValidator(config: config)
        self.metrics = InferenceMetrics(model: name, version: version)
        self.labels = labels
    }

    var instanceCount: Int { pool.count }

    func infer(_ request: InferenceRequest) async throws(TernError) -> InferenceResponse {
        let start = ContinuousClock.now
        metrics.pending.increment()
        defer { metrics.pending.decrement() }
        do {
            let (inputs, batchSize, outputNames) = try validator.prepare(request)
            let prepared = ContinuousClock.now
            let (outputs, queued, executed) = try await execute(inputs: inputs, outputNames: outputNames)
            var tensors: [Tensor] = []
            tensors.reserveCapacity(outputs.count)
            let batched = config.maxBatchSize > 0
            for tensor in outputs {
                var shaped = validator.shapeOutput(tensor, batchSize: batchSize)
                if let wanted = request.outputs.first(where: { $0.name == tensor.name }), wanted.classificationCount > 0 {
                    shaped = try Classification.apply(
                        to: shaped, count: wanted.classificationCount, batched: batched, labels: labels[tensor.name] ?? [])
                }
                tensors.append(shaped)
            }
            let done = ContinuousClock.now
            let timings = RequestTimings(
                queue: (queued - prepared).nanoseconds, computeInput: (prepared - start).nanoseconds,
                computeInfer: (executed - queued).nanoseconds, computeOutput: (done - executed).nanoseconds,
                total: (done - start).nanoseconds, batchSize: batchSize)
            statistics.recordSuccess(timings)
            metrics.record(timings)
            return InferenceResponse(modelName: name, modelVersion: version, id: request.id, outputs: tensors)
        } catch {
            statistics.recordFailure(durationNs: (ContinuousClock.now - start).nanoseconds)
            (error.code == .internalError ? metrics.failureBackend : metrics.failureOther).increment()
            throw error
        }
    }

    /// Runs the backend; returns the outputs and when the instance was acquired and released.
    private func execute(
        inputs: [Tensor], outputNames: [String]
    ) async throws(TernError) -> ([Tensor], ContinuousClock.Instant, ContinuousClock.Instant) {
        do {
            return try await pool.run { instance in
                let acquired = ContinuousClock.now
                let outputs = try instance.execute(inputs: inputs, outputNames: outputNames)
                return (outputs, acquired, ContinuousClock.now)
            }
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("model '\(name)' version \(version) failed: \(error)", cause: error)
        }
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds)) / 1_000_000_000
    }
}
