import Foundation
import Testing
import TernCore
import TernRuntime
@testable import TernHybrid

@Suite struct CircuitBreakerTests {
    @Test func opensAfterConsecutiveFailuresProbesOnceAndClosesOnSuccess() {
        var breaker = CircuitBreaker(failureThreshold: 3, openNs: 1000)
        var allowed = breaker.allow(nowNs: 0)
        #expect(allowed)
        breaker.recordFailure(nowNs: 1)
        breaker.recordFailure(nowNs: 2)
        #expect(breaker.state == .closed)
        breaker.recordSuccess()  // a success resets the count
        breaker.recordFailure(nowNs: 3)
        breaker.recordFailure(nowNs: 4)
        breaker.recordFailure(nowNs: 5)
        #expect(breaker.state == .open)
        allowed = breaker.allow(nowNs: 500)
        #expect(!allowed)
        allowed = breaker.allow(nowNs: 1005)  // the probe
        #expect(allowed && breaker.state == .halfOpen)
        allowed = breaker.allow(nowNs: 1006)  // one probe at a time
        #expect(!allowed)
        breaker.recordFailure(nowNs: 1010)
        allowed = breaker.allow(nowNs: 1500)
        #expect(breaker.state == .open && !allowed)
        allowed = breaker.allow(nowNs: 2010)
        #expect(allowed)
        breaker.recordSuccess()
        allowed = breaker.allow(nowNs: 2011)
        #expect(breaker.state == .closed && allowed)
    }
}

@Suite struct RoutingSignalsTests {
    @Test func confidenceMeasures() throws {
        let p = Tensor(name: "p", shape: [2, 4], values: [Float(0.7), 0.1, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25])
        let max = try RoutingSignals.confidence(p, rows: 2, measure: .max)
        #expect(abs(max[0] - 0.7) < 1e-6 && abs(max[1] - 0.25) < 1e-6)
        let margin = try RoutingSignals.confidence(p, rows: 2, measure: .margin)
        #expect(abs(margin[0] - 0.6) < 1e-6 && abs(margin[1]) < 1e-6)
        let entropy = try RoutingSignals.confidence(p, rows: 2, measure: .entropy)
        // 1 − H/log(4): uniform → 0; [0.7, 0.1, 0.1, 0.1] → 1 − 0.9404/1.3863.
        #expect(abs(entropy[1]) < 1e-9)
        #expect(abs(entropy[0] - (1 - 0.940447988 / Foundation.log(4.0))) < 1e-6)
        // Logits are turned into probabilities first.
        let logits = Tensor(name: "z", shape: [1, 2], values: [Float(2), 0])
        let softmax = try RoutingSignals.confidence(logits, rows: 1, measure: .max)
        #expect(abs(softmax[0] - 1 / (1 + Foundation.exp(-2.0))) < 1e-6)
        #expect(throws: TernError.self) { try RoutingSignals.confidence(Tensor(name: "l", shape: [2], values: [Int64(1), 2]), rows: 2, measure: .max) }
    }

    @Test func complexityIsVarianceTimesLogSize() {
        let flat = Tensor(name: "x", shape: [1, 4], values: [Float(3), 3, 3, 3])
        #expect(RoutingSignals.complexity(flat) == 0)
        let busy = Tensor(name: "x", shape: [1, 4], values: [Float(0), 2, 0, 2])
        #expect(RoutingSignals.complexity(busy) == 1 * 2)  // variance 1, log2(4) = 2
    }

    @Test func ewmaFollowsItsInputs() {
        var average = EWMA(weight: 0.5)
        #expect(average.value == nil)
        average.add(10)
        average.add(20)
        #expect(average.value == 15)
    }
}

@Suite struct LatencyPolicyTests {
    @Test func linkModelSeparatesDelayFromBandwidth() throws {
        // A link with 40 ms of round trip + service and 2 MB/s upload (0.0005 ms per byte).
        var link = LinkModel()
        #expect(link.estimate(bytes: 1000) == nil)
        var generator = SystemRandomNumberGenerator()
        for i in 0..<400 {
            let bytes = Double([256, 4096, 65_536, 262_144][i % 4])
            let noise = Double.random(in: -2...2, using: &generator)
            link.add(bytes: bytes, ms: 40 + bytes * 0.0005 + noise)
        }
        #expect(abs(try #require(link.baseMs) - 40) < 3)
        #expect(abs(link.msPerByte - 0.0005) < 0.00005)
        #expect(abs(try #require(link.estimate(bytes: 1_000_000)) - 540) < 40)
        // The link slows down: the estimate follows within a few dozen requests.
        for i in 0..<60 {
            let bytes = Double([256, 65_536][i % 2])
            link.add(bytes: bytes, ms: 120 + bytes * 0.0005)
        }
        #expect(abs(try #require(link.estimate(bytes: 256)) - 120) < 10)
    }

    @Test func oneRequestSizeGivesTheMeanAndNoBandwidth() throws {
        var link = LinkModel()
        for ms in [10.0, 12, 11, 13, 9] { link.add(bytes: 256, ms: ms) }
        #expect(link.msPerByte == 0)
        #expect(abs(try #require(link.estimate(bytes: 100_000)) - 11) < 1.5)
    }

    @Test func localEstimateGrowsWithTheQueue() throws {
        let compute: [Int: Double] = [1: 2, 8: 6]
        let idle = ModelOccupancy(queued: 0, busyInstances: 0, instances: 2, maxBatchSize: 8)
        #expect(LocalEstimate.ms(occupancy: idle, computeMs: compute, fallback: nil) == 2)
        // Both instances busy, 30 waiting: this request is in wave ceil(31 / 16) = 2 of batches of
        // 8 (6 ms each), after half of the running batches (3 ms).
        let busy = ModelOccupancy(queued: 30, busyInstances: 2, instances: 2, maxBatchSize: 8)
        #expect(LocalEstimate.ms(occupancy: busy, computeMs: compute, fallback: nil) == 15.0)
        let deeper = ModelOccupancy(queued: 300, busyInstances: 2, instances: 2, maxBatchSize: 8)
        #expect(try #require(LocalEstimate.ms(occupancy: deeper, computeMs: compute, fallback: nil)) > 100)
        // Unmeasured sizes are scaled from the nearest measured one; nothing measured: the fallback.
        #expect(LocalEstimate.execution(rows: 4, [1: 2]) == 8)
        #expect(LocalEstimate.execution(rows: 4, [8: 6]) == 6)
        #expect(LocalEstimate.ms(occupancy: busy, computeMs: [:], fallback: 7) == 7)
        #expect(LocalEstimate.ms(occupancy: nil, computeMs: compute, fallback: 5) == 5)
    }

    @Test func choosesTheFasterRouteThatMeetsTheDeadline() {
        typealias R = HybridRouter
        #expect(R.choose(localMs: 5, remoteMs: 50, deadlineMs: nil, probe: false) == (.edge, "faster"))
        #expect(R.choose(localMs: 80, remoteMs: 50, deadlineMs: nil, probe: false) == (.cloud, "faster"))
        // The cloud cannot make 30 ms: local, even though the cloud is usually faster.
        #expect(R.choose(localMs: 25, remoteMs: 50, deadlineMs: 30, probe: false) == (.edge, "deadline"))
        // A deep local queue that misses the deadline goes to a cloud that meets it.
        #expect(R.choose(localMs: 40, remoteMs: 20, deadlineMs: 30, probe: false) == (.cloud, "deadline"))
        #expect(R.choose(localMs: 40, remoteMs: 25, deadlineMs: 30, probe: true) == (.edge, "probe"))
        // Neither meets it: the faster.
        #expect(R.choose(localMs: 40, remoteMs: 60, deadlineMs: 30, probe: false) == (.edge, "faster"))
        #expect(R.choose(localMs: 90, remoteMs: 60, deadlineMs: 30, probe: false) == (.cloud, "faster"))
        // Unmeasured routes are probed.
        #expect(R.choose(localMs: nil, remoteMs: nil, deadlineMs: nil, probe: false) == (.edge, "probe"))
        #expect(R.choose(localMs: 3, remoteMs: nil, deadlineMs: nil, probe: false) == (.cloud, "probe"))
    }
}
