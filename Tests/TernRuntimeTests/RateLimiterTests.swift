import Dispatch
import Foundation
import Synchronization
import Testing
import TernCore
@testable import TernRuntime

@Suite struct RateLimiterTests {
    /// Waits (briefly) until `condition` holds.
    static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return condition()
    }

    @Test func theLowestPriorityValueGoesFirstThenArrivalOrder() {
        let limiter = RateLimiter(resources: ["cpu": 1])
        let holder = RateLimiter.Claim(resources: ["cpu": 1], priority: 1)
        limiter.acquire(holder)
        let order = Mutex<[String]>([])
        let finished = DispatchSemaphore(value: 0)
        for (name, priority) in [("background-1", 10), ("background-2", 10), ("detector", 1)] {
            let before = limiter.waitingCount
            // Threads of their own: blocked waiters must not use up the global queue's few threads.
            Thread {
                let claim = RateLimiter.Claim(resources: ["cpu": 1], priority: priority)
                limiter.acquire(claim)
                order.withLock { $0.append(name) }
                limiter.release(claim)
                finished.signal()
            }.start()
            #expect(Self.eventually { limiter.waitingCount == before + 1 })
        }
        limiter.release(holder)
        for _ in 0..<3 { #expect(finished.wait(timeout: .now() + 5) == .success) }
        #expect(order.withLock { $0 } == ["detector", "background-1", "background-2"])
    }

    @Test func unconfiguredResourcesFitTheLargestClaimAndConfiguredOnesAreKept() {
        let limiter = RateLimiter(resources: ["gpu": 2])
        let big = RateLimiter.Claim(resources: ["cpu": 3, "gpu": 1], priority: 1)
        limiter.register(big)
        limiter.register(RateLimiter.Claim(resources: ["cpu": 1], priority: 1))
        limiter.acquire(big)  // cpu sized to 3: fits
        let small = RateLimiter.Claim(resources: ["gpu": 1], priority: 1)
        limiter.acquire(small)  // gpu configured as 2: one left
        let done = DispatchSemaphore(value: 0)
        Thread {
            limiter.acquire(RateLimiter.Claim(resources: ["cpu": 1], priority: 1))  // cpu exhausted: waits
            done.signal()
        }.start()
        #expect(Self.eventually { limiter.waitingCount == 1 })
        limiter.release(big)
        #expect(done.wait(timeout: .now() + 5) == .success)
    }

    @Test func claimsFollowTheInstanceGroups() throws {
        let config = try ModelConfig.parse(text: """
            name: "m"
            instance_group [
              { count: 2 kind: KIND_CPU rate_limiter { resources [ { name: "cpu" count: 1 }, { name: "mem" count: 4 global: true } ] priority: 3 } },
              { count: 1 kind: KIND_CPU }
            ]
            """)
        let claims = RateLimiter.Claim.claims(for: config)
        #expect(claims.count == 3)
        #expect(claims[0] == RateLimiter.Claim(resources: ["cpu": 1, "mem": 4], priority: 3) && claims[1] == claims[0])
        #expect(claims[2] == RateLimiter.Claim(resources: [:], priority: 1))
    }
}
