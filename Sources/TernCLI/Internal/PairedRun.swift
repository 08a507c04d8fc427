import Foundation
import Histogram
import TernClient
import Synchronization

/// Served calls and direct ONNX Runtime calls in alternating short slices, in one process, so
/// that each served slice is compared with a direct slice a fraction of a second away. On a
/// shared machine whose speed drifts by ±20 % over seconds, separate runs cannot resolve a few
/// percent; adjacent slices see nearly the same machine. Each slice ends by letting its calls
/// drain (the other side waits), so the two never compete for the cores, and the order of the
/// two slices in a pair alternates so that neither side always goes first.
enum PairedRun {
    struct Result: Sendable {
        /// Calls per second of each slice pair.
        var pairs: [(served: Double, direct: Double)]
        var errors: Int
        var firstError: String?
        /// Latency of the served calls of the measured slices, in microseconds.
        var servedLatency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        /// With a CPU-time reader: the measured process's CPU seconds per call in each slice pair.
        var cpuPerCall: [(served: Double, direct: Double)] = []

        /// Mean CPU µs per call of each side (nil without a CPU-time reader).
        var cpuMicroseconds: (served: Double, direct: Double)? {
            guard !cpuPerCall.isEmpty else { return nil }
            let n = Double(cpuPerCall.count)
            return (cpuPerCall.map(\.served).reduce(0, +) / n * 1e6, cpuPerCall.map(\.direct).reduce(0, +) / n * 1e6)
        }

        var ratios: [Double] { pairs.map { $0.served / max($0.direct, 1e-9) } }
        var served: Double { pairs.map(\.served).reduce(0, +) / Double(max(pairs.count, 1)) }
        var direct: Double { pairs.map(\.direct).reduce(0, +) / Double(max(pairs.count, 1)) }

        var medianRatio: Double {
            let sorted = ratios.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }

        /// The mean ratio and the half-width of its 95 % confidence interval (normal approximation).
        var meanRatio: (mean: Double, halfWidth: Double) {
            let r = ratios
            guard r.count > 1 else { return (r.first ?? 0, .infinity) }
            let mean = r.reduce(0, +) / Double(r.count)
            let variance = r.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(r.count - 1)
            return (mean, 1.96 * (variance / Double(r.count)).squareRoot())
        }
    }

    private enum Phase: Int { case idle = 0, served = 1, direct = 2, stop = 3 }

    /// Which side may send, and the calls each side has in flight and has finished. Workers that
    /// may not send wait on the condition (no polling: idle threads must not take CPU from the
    /// side being measured).
    private final class Gate: @unchecked Sendable {
        let condition = NSCondition()
        var phase = Phase.idle
        var inFlight = [0, 0]
        var completed = [0, 0]
        var errors = 0
        var firstError: String?
        /// Whether served latencies are being kept (the measured slices, not warm-up).
        var measuring = false
        var servedLatency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    }

    /// Closed loop on both sides: `servedWorkers` threads calling `served`, `directWorkers` threads
    /// calling `direct`; only the side whose slice it is sends. After each slice drains, `settle`
    /// passes with nothing sent, so that work a server defers (a writer flushing every 100 ms, say)
    /// lands in the slice that caused it rather than the next one; `cpuTime` (CPU seconds of the
    /// server process) is read around each slice, settle included.
    static func run(
        servedWorkers: Int, directWorkers: Int, slice: Duration, pairs: Int, warmup: Duration,
        settle: Duration = .zero, cpuTime: (() -> Double?)? = nil,
        served: @escaping LoadGenerator.BlockingWorker, direct: @escaping LoadGenerator.BlockingWorker
    ) throws -> Result {
        let gate = Gate()
        let setupFailure = Mutex<(any Error)?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let done = DispatchGroup()

        func startWorkers(_ count: Int, side: Phase, make: @escaping LoadGenerator.BlockingWorker) {
            let index = side.rawValue - 1
            for _ in 0..<count {
                done.enter()
                let thread = Thread {
                    defer { done.leave() }
                    var call: () throws -> Void
                    do {
                        call = try make()
                    } catch {
                        setupFailure.withLock { $0 = $0 ?? error }
                        ready.signal()
                        return
                    }
                    ready.signal()
                    while true {
                        gate.condition.lock()
                        while gate.phase != side && gate.phase != .stop { gate.condition.wait() }
                        if gate.phase == .stop {
                            gate.condition.unlock()
                            return
                        }
                        gate.inFlight[index] += 1
                        gate.condition.unlock()
                        var failure: (any Error)? = nil
                        let sent = ContinuousClock.now
                        do { try call() } catch { failure = error }
                        let latency = (ContinuousClock.now - sent) / .microseconds(1)
                        gate.condition.lock()
                        gate.inFlight[index] -= 1
                        if let failure {
                            gate.errors += 1
                            gate.firstError = gate.firstError ?? "\(failure)"
                        } else {
                            gate.completed[index] += 1
                            if side == .served, gate.measuring { _ = gate.servedLatency.record(UInt64(max(0, latency))) }
                        }
                        if gate.inFlight[index] == 0 { gate.condition.broadcast() }
                        gate.condition.unlock()
                        if failure is SocketError, let fresh = try? make() { call = fresh }
                    }
                }
                thread.stackSize = 1 << 20
                thread.start()
            }
        }
        startWorkers(servedWorkers, side: .served, make: served)
        startWorkers(directWorkers, side: .direct, make: direct)
        for _ in 0..<(servedWorkers + directWorkers) { ready.wait() }
        defer {
            gate.condition.lock()
            gate.phase = .stop
            gate.condition.broadcast()
            gate.condition.unlock()
            done.wait()
        }
        if let failure = setupFailure.withLock({ $0 }) { throw failure }

        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        /// Runs one side for `length`, waits for its calls to finish and `settle` more; returns its
        /// calls per second (over the sending time) and the CPU seconds per call it cost.
        func measure(_ side: Phase, _ length: Duration) -> (rate: Double, cpu: Double?) {
            let index = side.rawValue - 1
            let cpuBefore = cpuTime?()
            gate.condition.lock()
            let before = gate.completed[index]
            let start = clock.now
            gate.phase = side
            gate.condition.broadcast()
            gate.condition.unlock()
            Thread.sleep(forTimeInterval: seconds(length))
            gate.condition.lock()
            gate.phase = .idle
            while gate.inFlight[index] > 0 { gate.condition.wait() }
            let elapsed = seconds(clock.now - start)
            let calls = gate.completed[index] - before
            gate.condition.unlock()
            if settle > .zero { Thread.sleep(forTimeInterval: seconds(settle)) }
            let cpu = cpuBefore.flatMap { before in cpuTime?().map { ($0 - before) / Double(max(calls, 1)) } }
            return (Double(calls) / max(elapsed, 1e-9), cpu)
        }
        _ = measure(.served, warmup)
        _ = measure(.direct, warmup)
        let warmupErrors = gate.condition.withLock {
            gate.measuring = true
            return gate.errors
        }
        var result = Result(pairs: [], errors: 0)
        for pair in 0..<pairs {
            let s: (rate: Double, cpu: Double?), d: (rate: Double, cpu: Double?)
            if pair % 2 == 0 {
                s = measure(.served, slice)
                d = measure(.direct, slice)
            } else {
                d = measure(.direct, slice)
                s = measure(.served, slice)
            }
            result.pairs.append((s.rate, d.rate))
            if let served = s.cpu, let direct = d.cpu { result.cpuPerCall.append((served, direct)) }
        }
        gate.condition.withLock {
            result.errors = gate.errors - warmupErrors
            result.firstError = gate.firstError
            result.servedLatency = gate.servedLatency
        }
        return result
    }
}

/// CPU seconds a process has run, all its threads together, from `/proc/PID/task/*/schedstat`
/// (nanoseconds; `/proc/PID/stat` counts 10 ms ticks, too coarse for half-second slices). Threads
/// that ended take their time with them: for servers whose threads live as long as they do.
enum ProcessCPU {
    static func seconds(pid: Int32) -> Double? {
        let tasks = "/proc/\(pid)/task"
        guard let threads = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return nil }
        var total: UInt64 = 0
        for thread in threads {
            guard let text = try? String(contentsOfFile: "\(tasks)/\(thread)/schedstat", encoding: .utf8),
                let first = text.split(separator: " ").first, let ns = UInt64(first)
            else { continue }
            total += ns
        }
        return Double(total) / 1e9
    }
}
