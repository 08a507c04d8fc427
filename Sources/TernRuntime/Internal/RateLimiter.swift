import Dispatch
import Synchronization
import TernCore

/// Triton's `--rate-limit=execution_count`: an instance executes only while it holds the
/// resources its `instance_group.rate_limiter` asks for, taken from one server-wide pool. When
/// several instances wait, the one with the lowest `priority` value goes first (then the one that
/// asked first), so a high-priority model is not starved by a busy background one.
///
/// The pool holds `--rate-limit-resource NAME:COUNT` of a resource, else (as Triton) the most any
/// single instance asks for. Tern has one device (the CPU), so `global` and per-device resources
/// share the same pool.
final class RateLimiter: Sendable {
    /// What one instance needs to execute.
    struct Claim: Sendable, Equatable {
        var resources: [String: Int]
        /// Lower runs first; 0 counts as 1 (Triton's default).
        var priority: Int
    }

    private struct Waiter {
        var claim: Claim
        var order: UInt64
        var semaphore: DispatchSemaphore
    }

    private struct State {
        var configured: [String: Int]
        /// Resources' sizes: configured, else the largest single claim seen.
        var capacity: [String: Int] = [:]
        var inUse: [String: Int] = [:]
        var waiting: [Waiter] = []
        var nextOrder: UInt64 = 0
    }

    private let state: Mutex<State>

    init(resources: [String: Int]) {
        state = Mutex(State(configured: resources, capacity: resources))
    }

    /// Makes the pool large enough for `claim` alone (Triton sizes unconfigured resources this way).
    func register(_ claim: Claim) {
        state.withLock { s in
            for (name, count) in claim.resources where s.configured[name] == nil {
                s.capacity[name] = max(s.capacity[name] ?? 0, count)
            }
        }
    }

    /// Blocks the calling thread (an instance's own queue) until `claim` is granted.
    func acquire(_ claim: Claim) {
        let semaphore: DispatchSemaphore? = state.withLock { s in
            if s.waiting.isEmpty || !s.waiting.contains(where: { $0.claim.priority <= claim.priority }), Self.fits(claim, s) {
                Self.take(claim, &s)
                return nil
            }
            let waiter = Waiter(claim: claim, order: s.nextOrder, semaphore: DispatchSemaphore(value: 0))
            s.nextOrder += 1
            s.waiting.append(waiter)
            return waiter.semaphore
        }
        semaphore?.wait()
    }

    func release(_ claim: Claim) {
        let granted: [DispatchSemaphore] = state.withLock { s in
            for (name, count) in claim.resources { s.inUse[name, default: 0] -= count }
            s.waiting.sort { ($0.claim.priority, $0.order) < ($1.claim.priority, $1.order) }
            var granted: [DispatchSemaphore] = []
            // In priority order; the first claim that does not fit stops the scan, so a large claim
            // is not starved by smaller ones behind it.
            while let first = s.waiting.first, Self.fits(first.claim, s) {
                Self.take(first.claim, &s)
                granted.append(first.semaphore)
                s.waiting.removeFirst()
            }
            return granted
        }
        for semaphore in granted { semaphore.signal() }
    }

    var waitingCount: Int { state.withLock { $0.waiting.count } }

    private static func fits(_ claim: Claim, _ s: State) -> Bool {
        claim.resources.allSatisfy { name, count in (s.inUse[name] ?? 0) + count <= max(s.capacity[name] ?? 0, count) }
    }

    private static func take(_ claim: Claim, _ s: inout State) {
        for (name, count) in claim.resources { s.inUse[name, default: 0] += count }
    }
}

extension RateLimiter.Claim {
    /// One claim per instance, in the order `ModelLoader.placements` creates the instances.
    static func claims(for config: ModelConfig) -> [RateLimiter.Claim] {
        var claims: [RateLimiter.Claim] = []
        for group in config.instanceGroup {
            let count = max(Int(group.count), 1) * (group.kind == .gpu ? max(group.gpus.count, 1) : 1)
            var resources: [String: Int] = [:]
            for resource in group.rateLimiter.resources { resources[resource.name, default: 0] += Int(resource.count) }
            let claim = RateLimiter.Claim(resources: resources, priority: max(Int(group.rateLimiter.priority), 1))
            claims += Array(repeating: claim, count: count)
        }
        return claims.isEmpty ? [RateLimiter.Claim(resources: [:], priority: 1)] : claims
    }
}

/// A model's instances' claims on the rate limiter; schedulers hold one around each execution.
struct ExecutionGate: Sendable {
    let limiter: RateLimiter
    let claims: [RateLimiter.Claim]

    /// Runs `body` while instance `index` holds its claim.
    func run<T>(instance index: Int, _ body: () throws -> T) rethrows -> T {
        let claim = claims[min(index, claims.count - 1)]
        guard !claim.resources.isEmpty else { return try body() }
        limiter.acquire(claim)
        defer { limiter.release(claim) }
        return try body()
    }
}
