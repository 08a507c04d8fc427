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
    }

    let configuration: BatchQueue.Configuration
    private let instances: [any ModelInstance]
    private let queues: [DispatchQueue]
    private let state: Mutex<State>
    private let averageNanoseconds = Atomic<UInt64>(UInt64.max / 16)
    private let gate: ExecutionGate?
    private let observer: ExecutionObserver

    init(
        instances: [any ModelInstance], configuration: BatchQueue.Configuration, label: String, gate: ExecutionGate? = nil,
        observer: @escaping ExecutionObserver
    ) {
        self.gate = gate
        var configuration = configuration
        configuration.instanceCount = instances.count
        self.configuration = configuration
        self.instances = instances
        self.queues = instances.indices.map { DispatchQueue(label: "tern.\(label).instance\($0)", qos: .userInitiated) }
        self.state = Mutex(State(queue: BatchQueue(configuration: configuration)))
        self.observer = observer
    }

    var instanceCount: Int { instances.count }

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
    func runInlineIfIdle(_ job: Job, shapeKey: [Int64], priority: UInt64, timeoutMicroseconds: UInt64) -> Result<Outcome, TernError>? {
        // A rate-limited instance may have to wait for resources: never on the caller's thread.
        guard isFast, gate?.claims.allSatisfy({ $0.resources.isEmpty }) ?? true else { return nil }
        let now = Self.nowNs()
        let box = ResultBox()
        var job = job
        job.arrivalNs = now
        job.completion = { box.result = $0 }
        let actions: [BatchQueue.Action]? = state.withLock { s in
            guard s.queue.wouldDispatchAlone(rows: job.rows) else { return nil }
            let (ticket, actions) = s.queue.enqueue(rows: job.rows, shapeKey: shapeKey, priority: priority, timeoutMicroseconds: timeoutMicroseconds, nowNs: now)
            if let ticket { s.jobs[ticket] = job }
            return actions
        }
        guard let actions else { return nil }
        perform(actions, rejectedJob: job, inline: true)
        return box.result
    }

    /// The result of an inline run, written and read on the same thread.
    private final class ResultBox: @unchecked Sendable {
        // @unchecked: set by the completion that runs synchronously inside `perform` on the
        // caller's thread, read after it returns on that thread.
        var result: Result<Outcome, TernError>?
    }

    private func perform(_ actions: [BatchQueue.Action], rejectedJob: Job? = nil, inline: Bool = false) {
        for action in actions {
            switch action {
            case .reject(let ticket, let reason):
                let job = state.withLock { $0.jobs.removeValue(forKey: ticket) } ?? rejectedJob
                job?.completion(.failure(.unavailable(reason.message)))
            case .dispatch(let batch):
                if inline, batch.tickets.count == 1 {
                    execute(batch)
                } else {
                    queues[batch.instance].async { self.execute(batch) }
                }
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

    /// Runs one batch on its instance and records each request's outcome.
    private func execute(_ batch: BatchQueue.Batch) {
        let start = Self.nowNs()
        let jobs = state.withLock { s in batch.tickets.map { s.jobs[$0]! } }
        var outcomes: Result<[Outcome], TernError>
        do throws(TernError) {
            let inputs = try BatchAssembly.merge(jobs.map(\.inputs))
            var wanted: [String] = []
            for job in jobs { for name in job.outputs where !wanted.contains(name) { wanted.append(name) } }
            let merged = Self.nowNs()
            let outputs: [Tensor]
            do {
                let instance = instances[batch.instance]
                let run = { try instance.execute(inputs: inputs, outputNames: wanted) }
                outputs = try gate.map { try $0.run(instance: batch.instance, run) } ?? run()
            } catch let error as TernError {
                throw error
            } catch {
                throw .internalError("\(error)", cause: error)
            }
            let executed = Self.nowNs()
            let parts = try BatchAssembly.split(outputs, rows: jobs.map(\.rows))
            let done = Self.nowNs()
            let elapsed = executed - merged
            let old = averageNanoseconds.load(ordering: .relaxed)
            averageNanoseconds.store(old >= UInt64.max / 16 ? elapsed : (old * 7 + elapsed) / 8, ordering: .relaxed)
            observer(batch.rows, merged - start, elapsed, done - executed)
            outcomes = .success(zip(jobs, parts).map { job, tensors in
                Outcome(
                    outputs: tensors.filter { job.outputs.contains($0.name) }, queueNs: start - min(start, job.arrivalNs),
                    computeInputNs: merged - start, computeInferNs: elapsed, computeOutputNs: done - executed, executionRows: batch.rows)
            })
        } catch {
            outcomes = .failure(error)
        }
        let actions = state.withLock { s in
            for (index, ticket) in batch.tickets.enumerated() {
                s.results[ticket] = outcomes.map { $0[index] }
            }
            return s.queue.executionFinished(batch, nowNs: Self.nowNs())
        }
        perform(actions)
    }
}
