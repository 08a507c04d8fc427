import Dispatch
import Synchronization
import TernCore

/// The execution instances of one model version. A request waits for a free instance, then runs
/// on it; at most `count` executions run at once.
///
/// Where the blocking backend call runs depends on how long the model takes. A model whose recent
/// executions averaged under `inlineThreshold` runs on the calling task's thread: handing a
/// 20 µs execution to another thread and back costs more than the execution (about 65 µs per
/// request over HTTP on a 2-core box). A slower model runs on its instance's own serial queue, so it
/// never holds a thread of the Swift concurrency pool for long.
final class InstancePool: Sendable {
    /// Executions averaging less than this run inline on the caller's thread.
    static let inlineThreshold: UInt64 = 500_000  // ns

    private struct State {
        var free: [Int]
        var waiters: [CheckedContinuation<Int, Never>] = []
    }

    private let instances: [any ModelInstance]
    private let queues: [DispatchQueue]
    private let state: Mutex<State>
    /// Moving average of execution time in ns; starts high so the first runs go to the queue.
    private let averageNanoseconds = Atomic<UInt64>(UInt64.max / 16)

    init(instances: [any ModelInstance], label: String) {
        self.instances = instances
        self.queues = instances.indices.map { DispatchQueue(label: "tern.\(label).instance\($0)", qos: .userInitiated) }
        self.state = Mutex(State(free: Array(instances.indices.reversed())))
    }

    var count: Int { instances.count }

    /// Runs `body` with a free instance.
    func run<T: Sendable>(_ body: @escaping @Sendable (any ModelInstance) throws -> T) async throws -> T {
        let index = await acquire()
        defer { release(index) }
        let instance = instances[index]
        if averageNanoseconds.load(ordering: .relaxed) < Self.inlineThreshold {
            return try timed { try body(instance) }
        }
        return try await withCheckedThrowingContinuation { continuation in
            queues[index].async {
                continuation.resume(with: Result { try self.timed { try body(instance) } })
            }
        }
    }

    /// A free instance, when the model is fast enough to run on the caller's thread; nil when
    /// it is slow or every instance is busy. Pair with `runInline` and `release`.
    func tryAcquireInline() -> Int? {
        guard averageNanoseconds.load(ordering: .relaxed) < Self.inlineThreshold else { return nil }
        return state.withLock { $0.free.popLast() }
    }

    /// Runs `body` on the caller's thread with an instance from `tryAcquireInline`.
    func runInline<T>(_ index: Int, _ body: (any ModelInstance) throws -> T) rethrows -> T {
        try timed { try body(instances[index]) }
    }

    private func timed<T>(_ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer {
            let elapsed = (ContinuousClock.now - start).nanoseconds
            let old = averageNanoseconds.load(ordering: .relaxed)
            // A racy update is fine: this only steers where the next executions run.
            averageNanoseconds.store(old >= UInt64.max / 16 ? elapsed : (old * 7 + elapsed) / 8, ordering: .relaxed)
        }
        return try body()
    }

    private func acquire() async -> Int {
        if let index = state.withLock({ $0.free.popLast() }) { return index }
        return await withCheckedContinuation { continuation in
            let ready: Int? = state.withLock { s in
                if let index = s.free.popLast() { return index }
                s.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    func release(_ index: Int) {
        let waiter: CheckedContinuation<Int, Never>? = state.withLock { s in
            if s.waiters.isEmpty {
                s.free.append(index)
                return nil
            }
            return s.waiters.removeFirst()
        }
        waiter?.resume(returning: index)
    }
}
