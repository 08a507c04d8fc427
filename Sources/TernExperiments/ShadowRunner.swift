import CoreMetrics
import Dispatch
import Foundation
import Synchronization
import TernCore
import TernRuntime
#if canImport(Glibc)
import Glibc
#endif

/// Runs shadow copies of requests on one thread at the lowest CPU priority (SCHED_IDLE), so that a
/// shadow variant only uses CPU the served requests leave idle. Copies wait in a bounded queue;
/// when it is full, new copies are dropped and counted (`tern_ab_shadow_dropped_total`) —
/// mirroring never slows or queues the served traffic.
final class ShadowRunner: Sendable {
    struct Job: Sendable {
        var request: InferenceRequest
        var completion: @Sendable (Result<InferenceResponse, TernError>, Duration) -> Void
    }

    private let engine: InferenceServer
    private let capacity: Int
    private let queue = Mutex<[Job]>([])
    private let ready = DispatchSemaphore(value: 0)
    private let dropped = Counter(label: "tern_ab_shadow_dropped_total")
    private let stopping = Atomic(false)

    init(engine: InferenceServer, capacity: Int = 1024) {
        self.engine = engine
        self.capacity = max(capacity, 1)
        let thread = Thread { [self] in run() }
        thread.name = "tern-ab-shadow"
        thread.start()
    }

    /// Queues a copy; false (and counted) when the queue is full.
    @discardableResult
    func submit(_ request: InferenceRequest, completion: @escaping @Sendable (Result<InferenceResponse, TernError>, Duration) -> Void) -> Bool {
        let accepted = queue.withLock { jobs in
            guard jobs.count < capacity else { return false }
            jobs.append(Job(request: request, completion: completion))
            return true
        }
        if accepted { ready.signal() } else { dropped.increment() }
        return accepted
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        ready.signal()
    }

    private func run() {
        #if os(Linux)
        // SCHED_IDLE (5): the thread runs only when no normal thread wants the CPU.
        var parameters = sched_param()
        parameters.sched_priority = 0
        _ = pthread_setschedparam(pthread_self(), 5, &parameters)
        #endif
        while true {
            ready.wait()
            if stopping.load(ordering: .relaxed) { return }
            guard let job = queue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            // One at a time, on this thread when the model can run it at once (a fast model with a
            // free instance), so the work runs at this thread's priority.
            let done = DispatchSemaphore(value: 0)
            let started = ContinuousClock.now
            engine.submit(job.request, allowInline: true) { result in
                job.completion(result, ContinuousClock.now - started)
                done.signal()
            }
            done.wait()
        }
    }
}
