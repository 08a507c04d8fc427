import Dispatch
import Synchronization
import TernCore

/// Runs the decisions of a `BatchQueue` for one model version: owns its instances, a serial queue
/// per instance, the wake-up timer, and the jobs waiting for their batch.
///
/// An instance that finishes a batch takes the next one on the same thread. A fast model (recent
/// executions under `inlineThreshold`) whose request would be sent alone at once runs on the
/// caller's thread: for a 20 µs model, handing work to another thread and back costs more than
/// the execution.
final class BatchScheduler: Sendable {
    static let inlineThreshold: UInt64 = 500_000  // ns
    /// Models faster than this may wait for a busy instance on the caller's thread.
    static let spinThreshold: UInt64 = 50_000  // ns

    /// What one request gets back: its outputs and where its time went.
    struct Outcome: Sendable {
        var outputs: [Tensor]
        var queueNs: UInt64
        var computeInputNs: UInt64
        var computeInferNs: UInt64
        var computeOutputNs: UInt64
        /// Rows of the execution that served it.
        var executionRows: Int
    }

    typealias Completion = @Sendable (Result<Outcome, TernError>) -> Void

    struct Job: Sendable {
        var inputs: [Tensor]
        var rows: Int
        var outputs: [String]
        var completion: Completion
        var arrivalNs: UInt64 = 0
    }

    /// One execution: rows, and the input, infer and output durations in ns.
    typealias ExecutionObserver = @Sendable (_ rows: Int, _ inputNs: UInt64, _ inferNs: UInt64, _ outputNs: UInt64) -> Void

    private struct State {
        var queue: BatchQueue
        var jobs: [BatchQueue.Ticket: Job] = [:]
        var results: [BatchQueue.Ticket: Result<Outcome, TernError>] = [:]
        /// Adaptive batching: the controller and the window it has not seen yet.
        var controller: AdaptiveBatchController?
        var windowLatencies: [UInt64] = []
        var windowRows = 0
        var windowExecutions = 0
        var windowExecutionNs: UInt64 = 0
        var windowStartNs: UInt64 = 0
    }

    /// Requests per adaptive-batching window (or `adaptiveWindowNs`, whichever comes first).
    static let adaptiveWindowRequests = 64
    static let adaptiveWindowNs: UInt64 = 200_000_000

    let configuration: BatchQueue.Configuration
    private let instances: [any ModelInstance]
    private let inlineAllowed: Bool
    private let queues: [DispatchQueue]
    private let state: Mutex<State>
    private let averageNanoseconds = Atomic<UInt64>(UInt64.max / 16)
    private let gate: ExecutionGate?
    private let observer: ExecutionObserver

    init(
        instances: [any ModelInstance], configuration: BatchQueue.Configuration, label: String, gate: ExecutionGate? = nil,
        adaptive: AdaptiveBatchController.Settings? = nil, observer: @escaping ExecutionObserver
    ) {
        self.gate = gate
        var configuration = configuration
        configuration.instanceCount = instances.count
        self.configuration = configuration
        self.instances = instances
        inlineAllowed = instances.allSatisfy(\.mayRunOnCallerThread)
        self.queues = instances.indices.map { DispatchQueue(label: "tern.\(label).instance\($0)", qos: .userInitiated) }
        var initial = State(queue: BatchQueue(configuration: configuration))
        if let adaptive {
            let controller = AdaptiveBatchController(settings: adaptive)
            initial.controller = controller
            initial.queue.tune(maxBatchSize: controller.batchLimit, maxQueueDelayNs: controller.delayNs)
        }
        self.state = Mutex(initial)
        self.observer = observer
    }

    var instanceCount: Int { instances.count }

    /// The batch limit and queue delay in force (adaptive batching changes them).
    var effectiveLimits: (maxBatchSize: Int, maxQueueDelayNs: UInt64) {
        state.withLock { ($0.queue.configuration.maxBatchSize, $0.queue.configuration.maxQueueDelayNs) }
    }

    /// Requests waiting, instances executing, and the batch limit in force, right now.
    var occupancy: (queued: Int, busy: Int, maxBatchSize: Int) {
        state.withLock { ($0.queue.queuedCount, instances.count - $0.queue.idleInstances, $0.queue.configuration.maxBatchSize) }
    }

    /// Scales the batch limit (see `BatchQueue.scaleBatches`).
    func scaleBatches(_ scale: Double) {
        state.withLock { $0.queue.scaleBatches(scale) }
    }

    static func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    private var isFast: Bool { averageNanoseconds.load(ordering: .relaxed) < Self.inlineThreshold }

    /// Queues a job; its completion runs when its batch has executed (or it was rejected).
    func submit(_ job: Job, shapeKey: [Int64], priority: UInt64, timeoutMicroseconds: UInt64) {
        var job = job
        let now = Self.nowNs()
        job.arrivalNs = now
        let actions = state.withLock { s in
            let (ticket, actions) = s.queue.enqueue(rows: job.rows, shapeKey: shapeKey, priority: priority, timeoutMicroseconds: timeoutMicroseconds, nowNs: now)
            if let ticket { s.jobs[ticket] = job }
            return actions
        }
        perform(actions, rejectedJob: job)
    }

    /// Runs the job on the caller's thread when the model is fast and the job would be sent alone
    /// at once; returns nil (and queues nothing) otherwise.
    func runInlineIfIdle(_ job: Job) -> Result<Outcome, TernError>? {
        // A rate-limited instance may have to wait for resources, and an instance that waits on
        // I/O would block an event loop: never on the caller's thread.
        guard isFast, inlineAllowed, gate?.claims.allSatisfy({ $0.resources.isEmpty }) ?? true else { return nil }
        let start = Self.nowNs()
        var claimed = state.withLock { $0.queue.claimForImmediateRun(rows: job.rows) }
        // A tiny model's busy instance frees up sooner than a hand-off to its queue and back
        // costs: wait for it briefly (at most twice its average execution) on this thread.
        let average = averageNanoseconds.load(ordering: .relaxed)
        if claimed == nil, average < Self.spinThreshold {
            let deadline = start + max(2 * average, 5_000)
            while claimed == nil, Self.nowNs() < deadline {
                claimed = state.withLock { $0.queue.claimForImmediateRun(rows: job.rows) }
            }
        }
        guard let instance = claimed else { return nil }
        // The request never enters the queue: no ticket, no result table, no delivery step.
        var job = job
        job.arrivalNs = start
        let (outcomes, executionNs) = run([job], instance: instance, rows: job.rows, start: start)
        let finishedAt = Self.nowNs()
        let actions = state.withLock { s in
            if s.controller != nil { adapt(&s, jobs: [job], rows: job.rows, executionNs: executionNs, nowNs: finishedAt) }
            return s.queue.instanceReleased(instance, nowNs: finishedAt)
        }
        perform(actions)
        return outcomes.map { $0[0] }
    }

    private func perform(_ actions: [BatchQueue.Action], rejectedJob: Job? = nil) {
        for action in actions {
            switch action {
            case .reject(let ticket, let reason):
                let job = state.withLock { $0.jobs.removeValue(forKey: ticket) } ?? rejectedJob
                job?.completion(.failure(.unavailable(reason.message)))
            case .dispatch(let batch):
                queues[batch.instance].async { self.execute(batch) }
            case .deliver(let tickets):
                let ready = state.withLock { s in
                    tickets.compactMap { ticket -> (Job, Result<Outcome, TernError>)? in
                        guard let job = s.jobs.removeValue(forKey: ticket), let result = s.results.removeValue(forKey: ticket) else { return nil }
                        return (job, result)
                    }
                }
                for (job, result) in ready { job.completion(result) }
            case .wakeUp(let at):
                DispatchQueue.global().asyncAfter(deadline: DispatchTime(uptimeNanoseconds: at)) {
                    let actions = self.state.withLock { $0.queue.tick(nowNs: Self.nowNs()) }
                    self.perform(actions)
                }
            }
        }
    }

    /// The merged inputs of a batch and the outputs any of its jobs asked for.
    private static func merge(_ jobs: [Job]) throws(TernError) -> (inputs: [Tensor], wanted: [String]) {
        let inputs = try BatchAssembly.merge(jobs.map(\.inputs))
        var wanted: [String] = []
        for job in jobs { for name in job.outputs where !wanted.contains(name) { wanted.append(name) } }
        return (inputs, wanted)
    }

    /// Merges the jobs' inputs, runs them on `instance` and splits the outputs back; returns each
    /// job's outcome and the execution's own duration.
    private func run(_ jobs: [Job], instance index: Int, rows: Int, start: UInt64) -> (Result<[Outcome], TernError>, UInt64) {
        do throws(TernError) {
            let (inputs, wanted) = try Self.merge(jobs)
            let merged = Self.nowNs()
            let outputs: [Tensor]
            do {
                let instance = instances[index]
                let run = { try instance.execute(inputs: inputs, outputNames: wanted) }
                outputs = try gate.map { try $0.run(instance: index, run) } ?? run()
            } catch let error as TernError {
                throw error
            } catch {
                throw .internalError("\(error)", cause: error)
            }
            return (.success(try split(outputs, jobs: jobs, rows: rows, start: start, merged: merged)), Self.nowNs() - merged)
        } catch {
            return (.failure(error), 0)
        }
    }

    /// Splits a batch's outputs back into each job's outcome and records the timings.
    private func split(_ outputs: [Tensor], jobs: [Job], rows: Int, start: UInt64, merged: UInt64) throws(TernError) -> [Outcome] {
        do {
            let executed = Self.nowNs()
            let parts = try BatchAssembly.split(outputs, rows: jobs.map(\.rows))
            let done = Self.nowNs()
            let elapsed = executed - merged
            let old = averageNanoseconds.load(ordering: .relaxed)
            averageNanoseconds.store(old >= UInt64.max / 16 ? elapsed : (old * 7 + elapsed) / 8, ordering: .relaxed)
            observer(rows, merged - start, elapsed, done - executed)
            return zip(jobs, parts).map { job, tensors in
                Outcome(
                    outputs: tensors.filter { job.outputs.contains($0.name) },
                    queueNs: start - min(start, job.arrivalNs),
                    computeInputNs: merged - start, computeInferNs: elapsed, computeOutputNs: done - executed, executionRows: rows)
            }
        }
    }

    /// Adds a finished execution to the adaptive window; at the window's end, lets the controller
    /// retune the queue.
    private func adapt(_ s: inout State, jobs: [Job], rows: Int, executionNs: UInt64, nowNs: UInt64) {
        if s.windowLatencies.isEmpty { s.windowStartNs = nowNs }
        for job in jobs { s.windowLatencies.append(nowNs - min(nowNs, job.arrivalNs)) }
        s.windowRows += rows
        s.windowExecutions += 1
        s.windowExecutionNs += executionNs
        guard s.windowLatencies.count >= Self.adaptiveWindowRequests || nowNs - s.windowStartNs >= Self.adaptiveWindowNs else { return }
        let window = AdaptiveBatchController.Window(
            p95Ns: AdaptiveBatchController.p95(s.windowLatencies), meanBatch: Double(s.windowRows) / Double(max(s.windowExecutions, 1)),
            meanExecutionNs: s.windowExecutionNs / UInt64(max(s.windowExecutions, 1)), requests: s.windowLatencies.count)
        s.windowLatencies.removeAll(keepingCapacity: true)
        s.windowRows = 0
        s.windowExecutions = 0
        s.windowExecutionNs = 0
        if s.controller!.observe(window) {
            s.queue.tune(maxBatchSize: s.controller!.batchLimit, maxQueueDelayNs: s.controller!.delayNs)
        }
    }

    /// Runs one batch on its instance and records each request's outcome. An asynchronous
    /// instance (a remote model) is awaited in a task: the instance's queue is free meanwhile,
    /// and the batcher gives the instance no other batch until this one finished.
    private func execute(_ batch: BatchQueue.Batch) {
        let start = Self.nowNs()
        let jobs = state.withLock { s in batch.tickets.map { s.jobs[$0]! } }
        if let instance = instances[batch.instance] as? any AsynchronousModelInstance {
            let prepared: (inputs: [Tensor], wanted: [String])
            do throws(TernError) {
                prepared = try Self.merge(jobs)
            } catch {
                return finished(batch, jobs: jobs, outcomes: .failure(error), executionNs: 0)
            }
            let merged = Self.nowNs()
            Task {
                do throws(TernError) {
                    let outputs = try await instance.run(inputs: prepared.inputs, outputNames: prepared.wanted)
                    let outcomes = try split(outputs, jobs: jobs, rows: batch.rows, start: start, merged: merged)
                    finished(batch, jobs: jobs, outcomes: .success(outcomes), executionNs: Self.nowNs() - merged)
                } catch {
                    finished(batch, jobs: jobs, outcomes: .failure(error), executionNs: 0)
                }
            }
            return
        }
        let (outcomes, executionNs) = run(jobs, instance: batch.instance, rows: batch.rows, start: start)
        finished(batch, jobs: jobs, outcomes: outcomes, executionNs: executionNs)
    }

    /// Records a batch's outcomes, lets the batcher know the instance is free, and delivers.
    private func finished(_ batch: BatchQueue.Batch, jobs: [Job], outcomes: Result<[Outcome], TernError>, executionNs: UInt64) {
        let finishedAt = Self.nowNs()
        let actions = state.withLock { s in
            for (index, ticket) in batch.tickets.enumerated() {
                s.results[ticket] = outcomes.map { $0[index] }
            }
            if s.controller != nil { adapt(&s, jobs: jobs, rows: batch.rows, executionNs: executionNs, nowNs: finishedAt) }
            return s.queue.executionFinished(batch, nowNs: finishedAt)
        }
        perform(actions)
    }
}
