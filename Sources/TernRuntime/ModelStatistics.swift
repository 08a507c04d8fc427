import Foundation
import Synchronization

/// Count and total time of one kind of event, as Triton's statistics extension reports it.
public struct StatisticDuration: Sendable, Hashable {
    /// How many events were counted.
    public var count: UInt64 = 0
    /// The total time of those events, in nanoseconds.
    public var ns: UInt64 = 0

    /// Makes a statistic from an event count and their total time in nanoseconds.
    public init(count: UInt64 = 0, ns: UInt64 = 0) {
        self.count = count
        self.ns = ns
    }

    mutating func add(_ nanoseconds: UInt64, count: UInt64 = 1) {
        self.count += count
        self.ns += nanoseconds
    }
}

/// Statistics of executions of one batch size.
public struct BatchStatistics: Sendable, Hashable {
    /// The number of batch rows of each execution counted here.
    public var batchSize: UInt64
    /// Executions of this batch size and the time spent assembling their inputs into the batch.
    public var computeInput = StatisticDuration()
    /// Executions of this batch size and the time the model spent running them.
    public var computeInfer = StatisticDuration()
    /// Executions of this batch size and the time spent splitting their outputs back into requests.
    public var computeOutput = StatisticDuration()
}

/// Triton's per model version statistics. `inferenceCount` counts batch rows, `executionCount`
/// executions; the durations count requests.
public struct ModelStatistics: Sendable, Hashable {
    /// The name of the model these statistics describe.
    public var name: String
    /// The model version they describe, as a decimal string.
    public var version: String
    /// Milliseconds since the epoch of the last inference; 0 if none yet.
    public var lastInference: UInt64 = 0
    /// Batch rows inferred, summed over every execution.
    public var inferenceCount: UInt64 = 0
    /// Batch executions run, however many requests each one merged.
    public var executionCount: UInt64 = 0
    /// Requests answered successfully and their total time from arrival to response.
    public var success = StatisticDuration()
    /// Requests that failed and their time from arrival to the failure.
    public var fail = StatisticDuration()
    /// Successful requests and the time they waited in the scheduler queue before executing.
    public var queue = StatisticDuration()
    /// Successful requests and the time spent validating their inputs and assembling them into a batch.
    public var computeInput = StatisticDuration()
    /// Successful requests and the time the model spent executing their batches.
    public var computeInfer = StatisticDuration()
    /// Successful requests and the time spent splitting their batches' outputs back out.
    public var computeOutput = StatisticDuration()
    /// Sorted by batch size.
    public var batchStats: [BatchStatistics] = []

    /// Makes empty statistics for version `version` of model `name`.
    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }
}

/// How busy one model version's scheduler is at an instant: what a router needs to estimate how
/// long a new request would wait.
public struct ModelOccupancy: Sendable, Hashable {
    /// Requests waiting in the queue.
    public var queued: Int
    /// Instances executing a batch now.
    public var busyInstances: Int
    /// Execution instances the version has loaded, busy or not.
    public var instances: Int
    /// The batch limit in force (1 for models without batching).
    public var maxBatchSize: Int

    /// Makes an occupancy snapshot from the queue length, the busy and total instance counts and the batch limit.
    public init(queued: Int, busyInstances: Int, instances: Int, maxBatchSize: Int) {
        self.queued = queued
        self.busyInstances = busyInstances
        self.instances = instances
        self.maxBatchSize = maxBatchSize
    }
}

/// Timings of one successful request, in nanoseconds.
struct RequestTimings {
    var queue: UInt64
    var computeInput: UInt64
    var computeInfer: UInt64
    var computeOutput: UInt64
    var total: UInt64
    var batchSize: Int
}

/// Accumulates the statistics of one model version; shared by every request to it.
final class StatisticsRecorder: Sendable {
    private let state: Mutex<ModelStatistics>

    init(name: String, version: Int64) {
        state = Mutex(ModelStatistics(name: name, version: String(version)))
    }

    var snapshot: ModelStatistics { state.withLock { $0 } }

    /// One successful request (its durations; Triton counts requests here).
    func recordSuccess(_ t: RequestTimings) {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        state.withLock { s in
            s.lastInference = now
            s.success.add(t.total)
            s.queue.add(t.queue)
            s.computeInput.add(t.computeInput)
            s.computeInfer.add(t.computeInfer)
            s.computeOutput.add(t.computeOutput)
        }
    }

    /// One execution of a batch of `rows` rows: inference and execution counts and `batch_stats`.
    func recordExecution(rows: Int, computeInput: UInt64, computeInfer: UInt64, computeOutput: UInt64) {
        state.withLock { s in
            s.inferenceCount += UInt64(rows)
            s.executionCount += 1
            let size = UInt64(rows)
            if let index = s.batchStats.firstIndex(where: { $0.batchSize == size }) {
                s.batchStats[index].computeInput.add(computeInput)
                s.batchStats[index].computeInfer.add(computeInfer)
                s.batchStats[index].computeOutput.add(computeOutput)
            } else {
                var batch = BatchStatistics(batchSize: size)
                batch.computeInput.add(computeInput)
                batch.computeInfer.add(computeInfer)
                batch.computeOutput.add(computeOutput)
                s.batchStats.append(batch)
                s.batchStats.sort { $0.batchSize < $1.batchSize }
            }
        }
    }

    func recordFailure(durationNs: UInt64) {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        state.withLock { s in
            s.fail.add(durationNs)
            s.lastInference = now
        }
    }
}
