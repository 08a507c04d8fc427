import Foundation
import Testing
import TernCore
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
