import CoreMetrics
import Foundation
import Logging
import TernCore

/// One loaded version of a model: request validation, its scheduler (which owns the instances),
/// post-processing and the statistics and metrics of its requests.
final class ModelVersionRunner: Sendable {
    let name: String
    let version: Int64
    let config: ModelConfig
    let signature: ModelSignature
    let statistics: StatisticsRecorder
    /// Stateless models: the dynamic batcher (or one request per execution).
    private let scheduler: BatchScheduler
    /// Stateful models (`sequence_batching`): the sequence batcher.
    private let sequencer: SequenceScheduler?
    private let validator: RequestValidator
    private let metrics: InferenceMetrics
    /// Class labels per output name, from `label_filename`.
    private let labels: [String: [String]]
    /// A model that answers whole requests (`RequestBackend`), and the engine: what such a model
    /// calls, and where requests in progress are counted.
    private let handler: (any RequestHandler)?
    private let link: EngineLink?

    init(
        name: String, version: Int64, config: ModelConfig, instances: [any ModelInstance], labels: [String: [String]],
        modelDirectory: URL? = nil, rateLimiter: RateLimiter? = nil, handler: (any RequestHandler)? = nil, link: EngineLink? = nil
    ) throws(TernError) {
        self.handler = handler
        self.link = link
        let gate = rateLimiter.map { limiter in
            let claims = RateLimiter.Claim.claims(for: config)
            for claim in claims { limiter.register(claim) }
            return ExecutionGate(limiter: limiter, claims: claims)
        }
        self.name = name
        self.version = version
        self.config = config
        self.signature = instances[0].signature
        let statistics = StatisticsRecorder(name: name, version: version)
        let metrics = InferenceMetrics(model: name, version: version)
        self.statistics = statistics
        self.scheduler = BatchScheduler(
            instances: instances, configuration: BatchQueue.Configuration(config: config, instanceCount: instances.count),
            label: "\(name).\(version)", gate: gate, adaptive: try AdaptiveBatchController.Settings(config: config)
        ) { rows, inputNs, inferNs, outputNs in
            statistics.recordExecution(rows: rows, computeInput: inputNs, computeInfer: inferNs, computeOutput: outputNs)
            metrics.recordExecution(rows: rows)
        }
        if case .sequenceBatching? = config.schedulingChoice {
            self.sequencer = try SequenceScheduler(
                instances: instances, config: config, modelDirectory: modelDirectory, label: "\(name).\(version)", gate: gate
            ) { rows, inputNs, inferNs, outputNs in
                statistics.recordExecution(rows: rows, computeInput: inputNs, computeInfer: inferNs, computeOutput: outputNs)
                metrics.recordExecution(rows: rows)
            }
        } else {
            self.sequencer = nil
        }
        self.validator = RequestValidator(config: config)
        self.metrics = metrics
        self.labels = labels
    }

    var instanceCount: Int { sequencer?.instanceCount ?? scheduler.instanceCount }

    /// How busy the dynamic batcher is; nil for models that do not queue through it (sequence
    /// batching, ensembles, routing models).
    var occupancy: ModelOccupancy? {
        guard handler == nil, sequencer == nil else { return nil }
        let (queued, busy, maxBatchSize) = scheduler.occupancy
        return ModelOccupancy(queued: queued, busyInstances: busy, instances: scheduler.instanceCount, maxBatchSize: maxBatchSize)
    }

    /// Scales the dynamic batcher's `max_batch_size` (device policy); sequence batchers keep theirs.
    func scaleBatches(_ scale: Double) { scheduler.scaleBatches(scale) }

    /// Runs the request: on the caller's thread when it can go at once (see `submit`), otherwise
    /// through the scheduler.
    func infer(_ request: InferenceRequest) async throws(TernError) -> InferenceResponse {
        let result: Result<InferenceResponse, TernError> = await withCheckedContinuation { continuation in
            submit(request, allowInline: true) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Queues the request; `completion` runs once, on the thread that finishes it (the caller's,
    /// before this returns, when it runs inline). No task is created: frontends on event loops
    /// hop back to their loop once.
    func submit(
        _ request: InferenceRequest, allowInline: Bool,
        completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) {
        let start = ContinuousClock.now
        metrics.pending.increment()
        link?.requestBegan()
        do throws(TernError) {
            let prepared = try validator.prepare(request)
            let preparedAt = ContinuousClock.now
            let batchSize = prepared.batchSize
            if let handler {
                try handOver(request, to: handler, batchSize: batchSize, start: start, prepared: preparedAt, completion: completion)
                return
            }
            let done: BatchScheduler.Completion = { [self] result in
                metrics.pending.decrement()
                defer { link?.requestEnded() }
                do throws(TernError) {
                    completion(.success(try finish(request, batchSize: batchSize, outcome: result.get(), start: start, prepared: preparedAt)))
                } catch {
                    recordFailure(error, since: start)
                    completion(.failure(error))
                }
            }
            if let sequencer {
                let (id, first, last) = try sequenceKeys(request, batchSize: batchSize)
                sequencer.submit(SequenceScheduler.Job(inputs: prepared.inputs, outputs: prepared.outputs, completion: done), sequence: id, start: first, end: last)
                return
            }
            let (priority, timeout) = try queueParameters(request)
            let job = BatchScheduler.Job(inputs: prepared.inputs, rows: batchSize, outputs: prepared.outputs, completion: done)
            if allowInline, let now = scheduler.runInlineIfIdle(job) {
                job.completion(now)
            } else {
                scheduler.submit(job, shapeKey: shapeKey(prepared.inputs), priority: priority, timeoutMicroseconds: timeout)
            }
        } catch {
            metrics.pending.decrement()
            link?.requestEnded()
            recordFailure(error, since: start)
            completion(.failure(error))
        }
    }

    /// The request's sequence: `sequence_id` (a non-zero integer or a non-empty string),
    /// `sequence_start` and `sequence_end`. A batching sequence model takes one row per request.
    private func sequenceKeys(_ request: InferenceRequest, batchSize: Int) throws(TernError) -> (SequenceQueue.SequenceID?, Bool, Bool) {
        if config.maxBatchSize > 0, batchSize != 1 {
            throw .invalidArgument("inference request to model '\(name)' must have batch size 1 for sequence batching, not \(batchSize)")
        }
        var id: SequenceQueue.SequenceID? = nil
        switch request.parameters["sequence_id"] {
        case .string(let text)?: id = text.isEmpty ? nil : .text(text)
        case .int64(let n)?: id = n == 0 ? nil : .number(UInt64(bitPattern: n))
        case .uint64(let n)?: id = n == 0 ? nil : .number(n)
        case nil: id = nil
        default: throw .invalidArgument("request parameter 'sequence_id' must be an integer or a string")
        }
        func flag(_ key: String) throws(TernError) -> Bool {
            switch request.parameters[key] {
            case .bool(let value)?: return value
            case nil: return false
            case .int64(let n)?: return n != 0
            default: throw .invalidArgument("request parameter '\(key)' must be a bool")
            }
        }
        return (id, try flag("sequence_start"), try flag("sequence_end"))
    }

    /// What decides whether requests may share a batch: their inputs' names and non-batch dims.
    private func shapeKey(_ inputs: [Tensor]) -> [Int64] {
        var key: [Int64] = []
        for tensor in inputs {
            key.append(Int64(truncatingIfNeeded: tensor.name.hashValue))
            key.append(Int64(tensor.shape.count))
            key += config.maxBatchSize > 0 ? tensor.shape.dropFirst() : tensor.shape[...]
        }
        return key
    }

    /// The request's `priority` and `timeout` (µs) parameters.
    private func queueParameters(_ request: InferenceRequest) throws(TernError) -> (UInt64, UInt64) {
        func parameter(_ name: String) throws(TernError) -> UInt64 {
            guard let value = request.parameters[name] else { return 0 }
            guard let number = value.integerValue, number >= 0 else {
                throw .invalidArgument("request parameter '\(name)' must be a non-negative integer")
            }
            return UInt64(number)
        }
        return (try parameter("priority"), try parameter("timeout"))
    }

    /// Post-processing (reshape, classification) and the request's statistics and metrics.
    private func finish(
        _ request: InferenceRequest, batchSize: Int, outcome: BatchScheduler.Outcome,
        start: ContinuousClock.Instant, prepared: ContinuousClock.Instant
    ) throws(TernError) -> InferenceResponse {
        var tensors: [Tensor] = []
        tensors.reserveCapacity(outcome.outputs.count)
        let batched = config.maxBatchSize > 0
        for tensor in outcome.outputs {
            var shaped = validator.shapeOutput(tensor, batchSize: batchSize)
            if let wanted = request.outputs.first(where: { $0.name == tensor.name }), wanted.classificationCount > 0 {
                shaped = try Classification.apply(
                    to: shaped, count: wanted.classificationCount, batched: batched, labels: labels[tensor.name] ?? [])
            }
            tensors.append(shaped)
        }
        let done = ContinuousClock.now
        let timings = RequestTimings(
            queue: outcome.queueNs, computeInput: (prepared - start).nanoseconds + outcome.computeInputNs,
            computeInfer: outcome.computeInferNs, computeOutput: outcome.computeOutputNs,
            total: (done - start).nanoseconds, batchSize: batchSize)
        statistics.recordSuccess(timings)
        metrics.record(timings)
        return InferenceResponse(modelName: name, modelVersion: version, id: request.id, outputs: tensors)
    }

    /// A request-answering model: the handler answers; this version keeps the statistics.
    private func handOver(
        _ request: InferenceRequest, to handler: any RequestHandler, batchSize: Int, start: ContinuousClock.Instant,
        prepared: ContinuousClock.Instant, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) throws(TernError) {
        guard let engine = link?.server else { throw .unavailable("model '\(name)': the server is shutting down") }
        handler.handle(request, engine: engine) { [self] result in
            metrics.pending.decrement()
            defer { link?.requestEnded() }
            switch result {
            case .success(var response):
                let done = ContinuousClock.now
                let timings = RequestTimings(
                    queue: 0, computeInput: (prepared - start).nanoseconds, computeInfer: (done - prepared).nanoseconds,
                    computeOutput: 0, total: (done - start).nanoseconds, batchSize: batchSize)
                statistics.recordExecution(rows: batchSize, computeInput: timings.computeInput, computeInfer: timings.computeInfer, computeOutput: 0)
                metrics.recordExecution(rows: batchSize)
                statistics.recordSuccess(timings)
                metrics.record(timings)
                response.modelName = name
                response.modelVersion = version
                response.id = request.id
                completion(.success(response))
            case .failure(let error):
                recordFailure(error, since: start)
                completion(.failure(error))
            }
        }
    }

    private func recordFailure(_ error: TernError, since start: ContinuousClock.Instant) {
        statistics.recordFailure(durationNs: (ContinuousClock.now - start).nanoseconds)
        if error.code == .unavailable {
            metrics.failureRejected.increment()
        } else {
            (error.code == .internalError ? metrics.failureBackend : metrics.failureOther).increment()
        }
    }
}
