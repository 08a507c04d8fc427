import TernClient
import Foundation
import Histogram
import Synchronization

/// Drives one request function at a fixed concurrency (closed loop) or a fixed rate (open loop)
/// and measures latency with an HdrHistogram, in the spirit of Triton's perf_analyzer.
struct LoadGenerator {
    struct Result: Sendable {
        var histogram: Histogram<UInt64>
        var completed: Int
        var errors: Int
        var firstError: String?
        var seconds: Double

        var throughput: Double { Double(completed) / max(seconds, 1e-9) }
        func percentile(_ p: Double) -> UInt64 { histogram.valueAtPercentile(p) }

        mutating func merge(_ other: Result) {
            histogram.add(other.histogram)
            completed += other.completed
            errors += other.errors
            firstError = firstError ?? other.firstError
        }
    }

    typealias Call = @Sendable () async throws -> Void
    /// Sets up one worker (a connection, say), runs the measuring loop with its call, tears down.
    typealias WorkerScope = @Sendable (_ loop: @Sendable (Call) async -> Result) async throws -> Result

    /// `makeCall` builds one worker's call (each worker may own a connection).
    static func closedLoop(
        concurrency: Int, warmup: Duration, measure: Duration, makeWorker: @escaping WorkerScope
    ) async throws -> Result {
        try await run(workers: concurrency, warmup: warmup, measure: measure, makeWorker: makeWorker, interval: nil)
    }

    /// Sends `rate` requests per second spread over `maxOutstanding` workers; latency is measured
    /// from each request's scheduled time, so a server that falls behind shows it.
    static func fixedRate(
        rate: Double, maxOutstanding: Int, warmup: Duration, measure: Duration,
        makeWorker: @escaping WorkerScope
    ) async throws -> Result {
        let interval = Duration.nanoseconds(Int64(1e9 / rate * Double(maxOutstanding)))
        return try await run(workers: maxOutstanding, warmup: warmup, measure: measure, makeWorker: makeWorker, interval: interval)
    }

    /// A worker that blocks its own thread: it opens its connection when made and returns the call
    /// that sends one request. Network modes use these so no task or thread hop is measured.
    typealias BlockingWorker = @Sendable () throws -> () throws -> Void

    /// As `closedLoop`/`fixedRate`, with one OS thread per worker making blocking calls.
    /// `schedule`: request rates and how long each lasts, one after another (a bursty trace); it
    /// replaces `rate`, and the measurement lasts as long as the schedule.
    static func blocking(
        workers: Int, rate: Double?, schedule: [(rate: Double, seconds: Double)] = [], warmup: Duration, measure: Duration,
        makeWorker: @escaping BlockingWorker
    ) async throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        let measureFrom = start + warmup
        let total = schedule.reduce(0) { $0 + $1.seconds }
        let stopAt = measureFrom + (schedule.isEmpty ? measure : .milliseconds(Int64(total * 1000)))
        let perWorker: @Sendable (Double) -> Duration = { rate in Duration.nanoseconds(Int64(1e9 / rate * Double(workers))) }
        let interval = schedule.first.map { perWorker($0.rate) } ?? rate.map(perWorker)
        /// The gap to a worker's next request at `instant`.
        let intervalAt: @Sendable (ContinuousClock.Instant) -> Duration? = { instant in
            guard !schedule.isEmpty else { return interval }
            var elapsed = Double((instant - measureFrom).components.seconds) + Double((instant - measureFrom).components.attoseconds) / 1e18
            for phase in schedule {
                if elapsed < phase.seconds { return perWorker(phase.rate) }
                elapsed -= phase.seconds
            }
            return perWorker(schedule.last!.rate)
        }
        var result = try await onThreads(workers) { worker throws -> Result in
            var call = try makeWorker()
            var result = emptyResult()
            var scheduled = start + (interval.map { $0 / workers * worker } ?? .zero)
            while true {
                if interval != nil {
                    let wait = scheduled - clock.now
                    if wait > .zero { Thread.sleep(forTimeInterval: Double(wait.components.attoseconds) / 1e18 + Double(wait.components.seconds)) }
                }
                let sent = interval == nil ? clock.now : scheduled
                if sent >= stopAt { break }
                do {
                    try call()
                    let done = clock.now
                    if sent >= measureFrom {
                        _ = result.histogram.record(UInt64(max(0, (done - sent) / .microseconds(1))))
                        result.completed += 1
                    }
                } catch {
                    if sent >= measureFrom { result.errors += 1 }
                    if result.firstError == nil { result.firstError = "\(error)" }
                    // A broken connection would fail every later call: reconnect.
                    if error is SocketError {
                        guard let fresh = try? makeWorker() else { break }
                        call = fresh
                    }
                }
                if let gap = intervalAt(scheduled) { scheduled += gap }
            }
            return result
        }
        let (seconds, attoseconds) = measure.components
        result.seconds = schedule.isEmpty ? Double(seconds) + Double(attoseconds) / 1e18 : total
        return result
    }

    /// A connection that carries several calls at once (HTTP/2 streams).
    typealias MultiplexedWorker = @Sendable () throws -> KServeGRPCClient.BlockingCaller

    /// Closed loop over `connections` connections, each with its share of `concurrency` calls in
    /// flight (as h2load's `-c`/`-m`): each connection's thread sends a new call the moment one
    /// ends, so high concurrencies need few client threads.
    static func multiplexed(
        concurrency: Int, connections: Int, warmup: Duration, measure: Duration, makeConnection: @escaping MultiplexedWorker
    ) async throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        let measureFrom = start + warmup
        let stopAt = measureFrom + measure
        let connections = max(1, min(connections, concurrency))
        var result = try await onThreads(connections) { index throws -> Result in
            let inFlight = concurrency / connections + (index < concurrency % connections ? 1 : 0)
            let connection = try makeConnection()
            var result = emptyResult()
            var sentAt: [UInt32: ContinuousClock.Instant] = [:]
            for _ in 0..<inFlight { sentAt[try connection.start()] = clock.now }
            while !sentAt.isEmpty {
                let (id, error) = try connection.next()
                let done = clock.now
                guard let sent = sentAt.removeValue(forKey: id) else { continue }
                if sent >= measureFrom {
                    if let error {
                        result.errors += 1
                        if result.firstError == nil { result.firstError = "\(error)" }
                    } else {
                        _ = result.histogram.record(UInt64(max(0, (done - sent) / .microseconds(1))))
                        result.completed += 1
                    }
                } else if let error, result.firstError == nil {
                    result.firstError = "\(error)"
                }
                if done < stopAt { sentAt[try connection.start()] = clock.now }
            }
            return result
        }
        let (seconds, attoseconds) = measure.components
        result.seconds = Double(seconds) + Double(attoseconds) / 1e18
        return result
    }

    /// Runs `body(index)` on `count` OS threads of their own (blocking calls never occupy the
    /// concurrency pool) and merges their results.
    private static func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Result) async throws -> Result {
        try await withThrowingTaskGroup(of: Result.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await withCheckedThrowingContinuation { continuation in
                        let thread = Thread { continuation.resume(with: Swift.Result { try body(index) }) }
                        thread.stackSize = 1 << 20
                        thread.start()
                    }
                }
            }
            var merged = emptyResult()
            for try await result in group { merged.merge(result) }
            return merged
        }
    }

    private static func emptyResult() -> Result {
        Result(
            histogram: Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three),
            completed: 0, errors: 0, firstError: nil, seconds: 0)
    }

    private static func run(
        workers: Int, warmup: Duration, measure: Duration,
        makeWorker: @escaping WorkerScope, interval: Duration?
    ) async throws -> Result {
        let clock = ContinuousClock()
        let start = clock.now
        let measureFrom = start + warmup
        let stopAt = measureFrom + measure
        let results = try await withThrowingTaskGroup(of: Result.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    try await makeWorker { call in
                    var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
                    var completed = 0, errors = 0
                    var firstError: String? = nil
                    // Open loop: stagger the workers so the rate is even.
                    var scheduled = start + (interval.map { $0 / workers * worker } ?? .zero)
                    while true {
                        if interval != nil {
                            try? await Task.sleep(until: scheduled, clock: clock)
                        }
                        let sent = interval == nil ? clock.now : scheduled
                        if sent >= stopAt { break }
                        do {
                            try await call()
                            let done = clock.now
                            if sent >= measureFrom {
                                _ = histogram.record(UInt64(max(0, (done - sent) / .microseconds(1))))
                                completed += 1
                            }
                        } catch {
                            if sent >= measureFrom { errors += 1 }
                            if firstError == nil { firstError = "\(error)" }
                        }
                        if let interval { scheduled += interval }
                    }
                    return Result(histogram: histogram, completed: completed, errors: errors, firstError: firstError, seconds: 0)
                    }
                }
            }
            var merged = emptyResult()
            for try await result in group { merged.merge(result) }
            return merged
        }
        var result = results
        let (seconds, attoseconds) = measure.components
        result.seconds = Double(seconds) + Double(attoseconds) / 1e18
        return result
    }
}
