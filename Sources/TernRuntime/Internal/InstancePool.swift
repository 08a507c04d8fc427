import Dispatch
import Synchronization
import TernCore

/// The execution instances of one model version. A request waits for a free instance, then runs
/// on that instance's own serial queue, so the blocking backend call never occupies the Swift
/// concurrency pool and at most `count` executions run at once.
final class InstancePool: Sendable {
    private struct State {
        var free: [Int]
        var waiters: [CheckedContinuation<Int, Never>] = []
    }

    private let instances: [any ModelInstance]
    private let queues: [DispatchQueue]
    private let state: Mutex<State>

    init(instances: [any ModelInstance], label: String) {
        self.instances = instances
        self.queues = instances.indices.map { DispatchQueue(label: "tern.\(label).instance\($0)", qos: .userInitiated) }
        self.state = Mutex(State(free: Array(instances.indices.reversed())))
    }

    var count: Int { instances.count }

    /// Runs `body` with a free instance, on that instance's thread.
    func run<T: Sendable>(_ body: @escaping @Sendable (any ModelInstance) throws -> T) async throws -> T {
        let index = await acquire()
        defer { release(index) }
        let instance = instances[index]
        return try await withCheckedThrowingContinuation { continuation in
            queues[index].async {
                continuation.resume(with: Result { try body(instance) })
            }
        }
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

    private func release(_ index: Int) {
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
