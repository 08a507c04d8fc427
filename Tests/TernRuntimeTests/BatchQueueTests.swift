import Foundation
import Testing
import TernCore
@testable import TernRuntime

/// The batcher's decisions, with time passed in by hand: no threads, sockets or clocks.
@Suite struct BatchQueueTests {
    typealias Q = BatchQueue

    static func batching(
        max: Int = 8, preferred: [Int] = [], delayUs: UInt64 = 0, instances: Int = 1,
        levels: Int = 0, defaultLevel: Int = 0, policy: Q.QueuePolicy = .init(), preserveOrdering: Bool = false
    ) -> Q.Configuration {
        var c = Q.Configuration()
        c.batching = true
        c.maxBatchSize = max
        c.preferredBatchSizes = preferred
        c.maxQueueDelayNs = delayUs * 1000
        c.instanceCount = instances
        c.priorityLevels = levels
        c.defaultPriorityLevel = defaultLevel
        c.defaultPolicy = policy
        c.preserveOrdering = preserveOrdering
        return c
    }

    static func dispatches(_ actions: [Q.Action]) -> [Q.Batch] {
        actions.compactMap { if case .dispatch(let b) = $0 { b } else { nil } }
    }

    static func rejections(_ actions: [Q.Action]) -> [(Q.Ticket, Q.Rejection)] {
        actions.compactMap { if case .reject(let t, let r) = $0 { (t, r) } else { nil } }
    }

    @discardableResult
    static func add(_ q: inout Q, rows: Int = 1, shape: [Int64] = [16], priority: UInt64 = 0, timeoutUs: UInt64 = 0, at now: UInt64) -> (Q.Ticket?, [Q.Action]) {
        q.enqueue(rows: rows, shapeKey: shape, priority: priority, timeoutMicroseconds: timeoutUs, nowNs: now)
    }

    @Test func withoutBatchingEveryRequestRunsAloneInArrivalOrder() {
        var q = Q(configuration: Q.Configuration())
        let (a, first) = Self.add(&q, rows: 3, at: 0)
        #expect(Self.dispatches(first) == [Q.Batch(instance: 0, tickets: [a!], rows: 3)])
        let (b, none) = Self.add(&q, at: 1)
        let (c, _) = Self.add(&q, at: 2)
        #expect(Self.dispatches(none).isEmpty && q.queuedCount == 2)
        let next = q.executionFinished(Self.dispatches(first)[0], nowNs: 10)
        #expect(next.first == .deliver([a!]))
        #expect(Self.dispatches(next) == [Q.Batch(instance: 0, tickets: [b!], rows: 1)])
        #expect(q.queuedCount == 1 && c != nil)
    }

    @Test func aBatchScaleShrinksBatchesOnTopOfTuningAndOneRestoresThem() {
        var q = Q(configuration: Self.batching(max: 8))
        q.scaleBatches(0.5)
        #expect(q.configuration.maxBatchSize == 4)
        q.tune(maxBatchSize: 6, maxQueueDelayNs: 0)  // adaptive batching keeps working under the scale
        #expect(q.configuration.maxBatchSize == 3)
        q.scaleBatches(0.1)
        #expect(q.configuration.maxBatchSize == 1)  // never below one row
        q.scaleBatches(1)
        #expect(q.configuration.maxBatchSize == 6)

        var scaled = Q(configuration: Self.batching(max: 8))
        scaled.scaleBatches(0.5)
        let running = Self.dispatches(Self.add(&scaled, at: 0).1)[0]
        for i in 0..<6 { Self.add(&scaled, at: UInt64(1 + i)) }
        let next = Self.dispatches(scaled.executionFinished(running, nowNs: 10))
        #expect(next.map(\.rows) == [4])
    }

    @Test func requestsQueuedBehindABusyInstanceAreMergedUpToMaxBatchSize() {
        var q = Q(configuration: Self.batching(max: 4))
        let (a, first) = Self.add(&q, at: 0)
        let running = Self.dispatches(first)[0]
        var tickets: [Q.Ticket] = []
        for i in 0..<5 { tickets.append(Self.add(&q, rows: i == 2 ? 2 : 1, at: UInt64(1 + i)).0!) }
        // rows 1,1,2,1,1: the first three fill 4 rows; the rest wait for the next execution.
        let next = Self.dispatches(q.executionFinished(running, nowNs: 10))
        #expect(next == [Q.Batch(instance: 0, tickets: Array(tickets[0..<3]), rows: 4)])
        let last = Self.dispatches(q.executionFinished(next[0], nowNs: 20))
        #expect(last == [Q.Batch(instance: 0, tickets: Array(tickets[3..<5]), rows: 2)])
        #expect(a == 1)
    }

    @Test func theDelayHoldsASmallBatchUntilItExpiresOrFills() {
        var q = Q(configuration: Self.batching(max: 4, delayUs: 100))
        let (_, first) = Self.add(&q, at: 1_000)
        #expect(Self.dispatches(first).isEmpty)
        #expect(first.contains(.wakeUp(atNs: 101_000)))
        Self.add(&q, at: 20_000)
        #expect(Self.dispatches(q.tick(nowNs: 50_000)).isEmpty)
        let sent = Self.dispatches(q.tick(nowNs: 101_000))
        #expect(sent.map(\.rows) == [2])
        // Filling max_batch_size sends at once, before the delay.
        var full = Q(configuration: Self.batching(max: 2, delayUs: 100))
        Self.add(&full, at: 0)
        let (_, second) = Self.add(&full, at: 10)
        #expect(Self.dispatches(second).map(\.rows) == [2])
    }

    @Test func aPreferredSizeIsSentWithoutWaiting() {
        var q = Q(configuration: Self.batching(max: 8, preferred: [2, 4], delayUs: 1_000_000))
        Self.add(&q, at: 0)
        let (_, second) = Self.add(&q, at: 1)
        #expect(Self.dispatches(second).map(\.rows) == [2])
        // With the instance busy, five queue up; when it frees, the largest preferred prefix (4) goes.
        for i in 0..<5 { Self.add(&q, at: UInt64(10 + i)) }
        let running = Q.Batch(instance: 0, tickets: [1, 2], rows: 2)
        let next = Self.dispatches(q.executionFinished(running, nowNs: 20))
        #expect(next.map(\.rows) == [4] && q.queuedCount == 1)
    }

    @Test func requestsOfOtherShapesAreNotMerged() {
        var q = Q(configuration: Self.batching(max: 8))
        let (_, first) = Self.add(&q, shape: [3], at: 0)
        let running = Self.dispatches(first)[0]
        let b = Self.add(&q, shape: [3], at: 1).0!
        let c = Self.add(&q, shape: [5], at: 2).0!
        let d = Self.add(&q, shape: [3], at: 3).0!
        let next = Self.dispatches(q.executionFinished(running, nowNs: 10))
        // b goes alone: c's shape closes the batch (d does not jump ahead of c).
        #expect(next.map(\.tickets) == [[b]])
        let after = Self.dispatches(q.executionFinished(next[0], nowNs: 20))
        #expect(after.map(\.tickets) == [[c]])
        #expect(Self.dispatches(q.executionFinished(after[0], nowNs: 30)).map(\.tickets) == [[d]])
    }

    @Test func strictPriorityWithTheDefaultLevelForOutOfRangePriorities() {
        var q = Q(configuration: Self.batching(max: 1, levels: 3, defaultLevel: 2))
        #expect(q.level(forPriority: 0) == 2 && q.level(forPriority: 9) == 2 && q.level(forPriority: 1) == 1)
        let running = Self.dispatches(Self.add(&q, at: 0).1)[0]
        let low = Self.add(&q, priority: 3, at: 1).0!
        let normal = Self.add(&q, at: 2).0!
        let high = Self.add(&q, priority: 1, at: 3).0!
        var order: [Q.Ticket] = []
        var batch = running
        for step in 1...3 {
            batch = Self.dispatches(q.executionFinished(batch, nowNs: UInt64(10 * step)))[0]
            order += batch.tickets
        }
        #expect(order == [high, normal, low])
    }

    @Test func aFullQueueRejectsPerLevel() {
        var policy = Q.QueuePolicy()
        policy.maxQueueSize = 2
        var q = Q(configuration: Self.batching(max: 1, policy: policy))
        Self.add(&q, at: 0)  // runs
        #expect(Self.add(&q, at: 1).0 != nil)
        #expect(Self.add(&q, at: 2).0 != nil)
        let (ticket, actions) = Self.add(&q, at: 3)
        #expect(ticket == nil && Self.rejections(actions).map(\.1) == [.queueFull])
        #expect(Q.Rejection.queueFull.message == "Exceeds maximum queue size")
    }

    @Test func timeoutsRejectOrDelayAndOnlyShortenTheDefault() {
        var reject = Q.QueuePolicy()
        reject.defaultTimeoutNs = 1_000_000
        reject.allowTimeoutOverride = true
        var q = Q(configuration: Self.batching(max: 1, policy: reject))
        let running = Self.dispatches(Self.add(&q, at: 0).1)[0]
        let short = Self.add(&q, timeoutUs: 100, at: 0).0!  // 100 µs < 1 ms: shortened
        let long = Self.add(&q, timeoutUs: 5_000, at: 0).0!  // 5 ms > 1 ms: the default applies
        let expired = q.tick(nowNs: 100_000)
        #expect(Self.rejections(expired).map(\.0) == [short] && Self.rejections(expired).map(\.1) == [.timedOut])
        #expect(Self.rejections(q.tick(nowNs: 999_999)).isEmpty)
        #expect(Self.rejections(q.tick(nowNs: 1_000_000)).map(\.0) == [long])
        #expect(q.queuedCount == 0 && running.tickets == [1])

        // Without a default, a request's own timeout does not apply (it can only shorten one).
        var none = Q.QueuePolicy()
        none.allowTimeoutOverride = true
        var open = Q(configuration: Self.batching(max: 1, policy: none))
        Self.add(&open, at: 0)
        Self.add(&open, timeoutUs: 1, at: 0)
        #expect(Self.rejections(open.tick(nowNs: 1_000_000_000)).isEmpty)

        // DELAY: the timed-out request goes after those of its level that have not timed out.
        var delay = reject
        delay.timeoutAction = .delay
        var d = Q(configuration: Self.batching(max: 1, policy: delay))
        let first = Self.dispatches(Self.add(&d, at: 0).1)[0]
        let late = Self.add(&d, timeoutUs: 10, at: 0).0!
        _ = d.tick(nowNs: 20_000)
        let onTime = Self.add(&d, at: 30_000).0!
        let next = Self.dispatches(d.executionFinished(first, nowNs: 40_000))[0]
        #expect(next.tickets == [onTime])
        #expect(Self.dispatches(d.executionFinished(next, nowNs: 50_000))[0].tickets == [late])
    }

    @Test func preserveOrderingHoldsResultsOfLaterBatches() {
        var q = Q(configuration: Self.batching(max: 1, instances: 2, preserveOrdering: true))
        let a = Self.dispatches(Self.add(&q, at: 0).1)[0]
        let b = Self.dispatches(Self.add(&q, at: 1).1)[0]
        #expect(a.instance != b.instance)
        // b finishes first: nothing is delivered until a is done, then both in order.
        #expect(!q.executionFinished(b, nowNs: 5).contains { if case .deliver = $0 { true } else { false } })
        #expect(q.executionFinished(a, nowNs: 6).contains(.deliver(a.tickets + b.tickets)))
    }

    @Test func aLoneRequestOnAnIdleInstanceIsSentAtOnce() {
        let q = Q(configuration: Self.batching(max: 4, delayUs: 100))
        #expect(!q.wouldDispatchAlone(rows: 1))  // the delay would hold it
        #expect(q.wouldDispatchAlone(rows: 4))
        var now = Q(configuration: Self.batching(max: 4))
        #expect(now.wouldDispatchAlone(rows: 1))
        Self.add(&now, at: 0)
        #expect(!now.wouldDispatchAlone(rows: 1))  // the instance is busy
    }

    @Test func configurationFollowsTheModelConfig() throws {
        let config = try ModelConfig.parse(text: """
            name: "m"
            max_batch_size: 16
            dynamic_batching {
              preferred_batch_size: [ 8, 4 ]
              max_queue_delay_microseconds: 300
              preserve_ordering: true
              priority_levels: 3
              default_priority_level: 2
              default_queue_policy { max_queue_size: 7 }
              priority_queue_policy { key: 1 value: { timeout_action: DELAY default_timeout_microseconds: 50 allow_timeout_override: true } }
            }
            """, file: "config.pbtxt")
        let c = Q.Configuration(config: config, instanceCount: 2)
        #expect(c.batching && c.maxBatchSize == 16 && c.preferredBatchSizes == [4, 8] && c.maxQueueDelayNs == 300_000)
        #expect(c.preserveOrdering && c.priorityLevels == 3 && c.defaultPriorityLevel == 2 && c.instanceCount == 2)
        #expect(c.policy(level: 2).maxQueueSize == 7)
        #expect(c.policy(level: 1) == Q.QueuePolicy(timeoutAction: .delay, defaultTimeoutNs: 50_000, allowTimeoutOverride: true, maxQueueSize: 0))
        let plain = Q.Configuration(config: try ModelConfig.parse(text: "name: \"m\"\nmax_batch_size: 8", file: "c"), instanceCount: 1)
        #expect(!plain.batching)
    }
}

@Suite struct BatchAssemblyTests {
    @Test func mergesAndSplitsRowsIncludingBytes() throws {
        let a = [Tensor(name: "X", shape: [1, 2], values: [Float(1), 2]), Tensor(name: "S", shape: [1, 1], strings: [Data("a".utf8)])]
        let b = [Tensor(name: "S", shape: [2, 1], strings: [Data("bb".utf8), Data("".utf8)]), Tensor(name: "X", shape: [2, 2], values: [Float(3), 4, 5, 6])]
        let merged = try BatchAssembly.merge([a, b])
        #expect(merged.map(\.name) == ["X", "S"])
        #expect(merged[0].shape == [3, 2])
        #expect(try merged[0].values(as: Float.self) == [1, 2, 3, 4, 5, 6])
        #expect(try merged[1].strings() == [Data("a".utf8), Data("bb".utf8), Data()])
        let parts = try BatchAssembly.split(merged, rows: [1, 2])
        #expect(parts[0][0].shape == [1, 2] && parts[1][0].shape == [2, 2])
        #expect(try parts[0][0].values(as: Float.self) == [1, 2])
        #expect(try parts[1][0].values(as: Float.self) == [3, 4, 5, 6])
        #expect(try parts[1][1].strings() == [Data("bb".utf8), Data()])
        // One request passes through untouched; a wrong row count is an error.
        #expect(try BatchAssembly.merge([a]).map(\.data) == a.map(\.data))
        #expect(throws: TernError.self) { try BatchAssembly.split(merged, rows: [1, 1]) }
    }
}
