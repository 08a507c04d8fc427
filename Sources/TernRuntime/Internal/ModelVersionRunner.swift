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
            let prepared = try validator.prepare(request)
            let preparedAt = ContinuousClock.now
            let (outputs, queued, executed) = try await execute(inputs: prepared.inputs, outputNames: prepared.outputs)
            return try finish(request, batchSize: prepared.batchSize, outputs: outputs, times: (start, preparedAt, queued, executed))
        } catch {
            recordFailure(error, since: start)
            throw error
        }
    }

    /// Runs the request on the caller's thread, now, when the model is fast and an instance is
    /// free (see `InstancePool`); nil when it would have to wait or hand off, so the caller can
    /// take the async path instead. Lets an event-loop frontend answer without any thread hop.
    func inferImmediately(_ request: InferenceRequest) throws(TernError) -> InferenceResponse? {
        guard let index = pool.tryAcquireInline() else { return nil }
        defer { pool.release(index) }
        let start = ContinuousClock.now
        do throws(TernError) {
            let prepared = try validator.prepare(request)
            let preparedAt = ContinuousClock.now
            let outputs: [Tensor]
            do {
                outputs = try pool.runInline(index) { try $0.execute(inputs: prepared.inputs, outputNames: prepared.outputs) }
            } catch let error as TernError {
                throw error
            } catch {
                throw TernError.internalError("model '\(name)' version \(version) failed: \(error)", cause: error)
            }
            let executed = ContinuousClock.now
            return try finish(request, batchSize: prepared.batchSize, outputs: outputs, times: (start, preparedAt, preparedAt, executed))
        } catch {
            recordFailure(error, since: start)
            throw error
        }
    }

    /// Post-processing (reshape, classification) and the request's statistics and metrics.
    private func finish(
        _ request: InferenceRequest, batchSize: Int, outputs: [Tensor],
        times: (start: ContinuousClock.Instant, prepared: ContinuousClock.Instant, queued: ContinuousClock.Instant, executed: ContinuousClock.Instant)
    ) throws(TernError) -> InferenceResponse {
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
            queue: (times.queued - times.prepared).nanoseconds, computeInput: (times.prepared - times.start).nanoseconds,
            computeInfer: (times.executed - times.queued).nanoseconds, computeOutput: (done - times.executed).nanoseconds,
            total: (done - times.start).nanoseconds, batchSize: batchSize)
        statistics.recordSuccess(timings)
        metrics.record(timings)
        return InferenceResponse(modelName: name, modelVersion: version, id: request.id, outputs: tensors)
    }

    private func recordFailure(_ error: TernError, since start: ContinuousClock.Instant) {
        statistics.recordFailure(durationNs: (ContinuousClock.now - start).nanoseconds)
        (error.code == .internalError ? metrics.failureBackend : metrics.failureOther).increment()
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
