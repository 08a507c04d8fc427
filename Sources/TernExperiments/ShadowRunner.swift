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
///
/// Waking a sleeping thread is a system call (and an interrupt to another core) on the served
/// request's path, so while copies keep coming the thread is not woken: it looks at the queue
/// every `pollInterval` by itself. After `idleAfter` without copies it sleeps until the next copy
/// wakes it (one wake-up per idle period, no timer ticks on an idle device).
final class ShadowRunner: Sendable {
    struct Job: Sendable {
        var request: InferenceRequest
        var completion: @Sendable (Result<InferenceResponse, TernError>, Duration) -> Void
    }

    private let engine: InferenceServer
    private let capacity: Int
    private let pollInterval: Duration
    private let idleAfter: Duration
    /// The copies, and whether the thread sleeps until woken.
    private let queue = Mutex<(jobs: [Job], asleep: Bool)>(([], false))
    private let ready = DispatchSemaphore(value: 0)
    private let dropped = Counter(label: "tern_ab_shadow_dropped_total")
    private let stopping = Atomic(false)
    private let started = Atomic(false)
    private let wakeUps = Atomic(0)

    init(engine: InferenceServer, capacity: Int = 1024, pollInterval: Duration = .milliseconds(1), idleAfter: Duration = .milliseconds(200)) {
        self.engine = engine
        self.capacity = max(capacity, 1)
        self.pollInterval = pollInterval
        self.idleAfter = idleAfter
    }

    /// Starts the shadow thread (once; `ExperimentManager.run` does). Copies queued before wait.
    func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in run() }
        thread.name = "tern-ab-shadow"
        thread.start()
    }

    /// Queues a copy; false (and counted) when the queue is full.
    @discardableResult
    func submit(_ request: InferenceRequest, completion: @escaping @Sendable (Result<InferenceResponse, TernError>, Duration) -> Void) -> Bool {
        let (accepted, wake) = queue.withLock { state -> (Bool, Bool) in
            guard state.jobs.count < capacity else { return (false, false) }
            state.jobs.append(Job(request: request, completion: completion))
            defer { state.asleep = false }
            return (true, state.asleep)
        }
        if wake {
            wakeUps.add(1, ordering: .relaxed)
            ready.signal()
        } else if !accepted {
            dropped.increment()
        }
        return accepted
    }

    /// How many copies had to wake the thread (tests).
    var wakeUpCount: Int { wakeUps.load(ordering: .relaxed) }

    /// Whether the thread sleeps until the next copy wakes it (tests).
    var isAsleep: Bool { queue.withLock { $0.asleep } }

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
        var lastJob = ContinuousClock.now
        while !stopping.load(ordering: .relaxed) {
            let (job, asleep) = queue.withLock { state -> (Job?, Bool) in
                if !state.jobs.isEmpty { return (state.jobs.removeFirst(), false) }
                // Nothing for a while: sleep until a copy wakes the thread.
                if ContinuousClock.now - lastJob >= idleAfter { state.asleep = true }
                return (nil, state.asleep)
            }
            guard let job else {
                if asleep {
                    ready.wait()
                } else {
                    _ = ready.wait(timeout: .now() + .nanoseconds(Int(pollInterval.nanoseconds)))
                }
                continue
            }
            // One at a time, on this thread when the model can run it at once (a fast model with a
            // free instance), so the work runs at this thread's priority.
            let done = DispatchSemaphore(value: 0)
            let started = ContinuousClock.now
            engine.submit(toModel: job.request, allowInline: true) { result in
                job.completion(result, ContinuousClock.now - started)
                done.signal()
            }
            done.wait()
            lastJob = ContinuousClock.now
        }
    }
}
