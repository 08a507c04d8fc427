import Testing
import TernCore
@testable import TernRuntime

/// The sequence batcher's decisions, with time passed in by hand.
@Suite struct SequenceQueueTests {
    typealias Q = SequenceQueue

    static func queue(maxBatch: Int = 2, instances: Int = 1, idleUs: UInt64 = 1_000, strategy: Q.Strategy = .direct,
                      delayUs: UInt64 = 0, utilization: Float = 0, preferred: [Int] = []) -> Q {
        var c = Q.Configuration()
        c.maxBatchSize = maxBatch
        c.instanceCount = instances
        c.idleNs = idleUs * 1000
        c.strategy = strategy
        c.maxQueueDelayNs = delayUs * 1000
        c.minimumSlotUtilization = utilization
        c.preferredBatchSizes = preferred
        return Q(configuration: c, modelName: "m")
    }

    static func batches(_ actions: [Q.Action]) -> [Q.Batch] {
        actions.compactMap { if case .dispatch(let b) = $0 { b } else { nil } }
    }

    static func rejection(_ actions: [Q.Action]) -> String? {
        actions.lazy.compactMap { if case .reject(_, let m) = $0 { m } else { nil } }.first
    }

    @Test func requestsOfOneSequenceRunInOrderOneAtATime() {
        var q = Self.queue()
        let s = Q.SequenceID.number(7)
        let first = Self.batches(q.enqueue(sequence: s, start: true, end: false, nowNs: 0).1)
        #expect(first.map { $0.rows.map(\.start) } == [[true]])
        // The next request of the same sequence waits for the first to finish.
        let (second, none) = q.enqueue(sequence: s, start: false, end: true, nowNs: 1)
        #expect(Self.batches(none).isEmpty)
        let after = q.executionFinished(first[0], nowNs: 2)
        #expect(after.contains(.deliver(first[0].rows.map(\.ticket))))
        let next = Self.batches(after)
        #expect(next.map { $0.rows.map(\.ticket) } == [[second!]] && next[0].rows[0].end)
        // END executed: the sequence is released and a later request is refused.
        #expect(q.executionFinished(next[0], nowNs: 3).contains(.released([s])))
        #expect(Self.rejection(q.enqueue(sequence: s, start: false, end: false, nowNs: 4).1)?.contains("START flag") == true)
    }

    @Test func errorsForMissingIdsAndUnstartedSequences() {
        var q = Self.queue()
        #expect(Self.rejection(q.enqueue(sequence: nil, start: true, end: false, nowNs: 0).1)?.contains("correlation ID") == true)
        #expect(Self.rejection(q.enqueue(sequence: .text("x"), start: false, end: false, nowNs: 0).1)
            == "inference request for sequence x to model 'm' must specify the START flag on the first request of the sequence")
        #expect(q.liveSequences == 0)
    }

    @Test func moreSequencesThanSlotsWaitForASlot() {
        var q = Self.queue(maxBatch: 1)  // one slot
        let a = Self.batches(q.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0).1)[0]
        let (waiting, none) = q.enqueue(sequence: .number(2), start: true, end: false, nowNs: 1)
        #expect(waiting != nil && Self.batches(none).isEmpty && q.sequencesWaitingForSlot == 1)
        _ = q.executionFinished(a, nowNs: 2)
        // Sequence 1 still holds the slot; its END frees it for sequence 2.
        let end = Self.batches(q.enqueue(sequence: .number(1), start: false, end: true, nowNs: 3).1)[0]
        let next = Self.batches(q.executionFinished(end, nowNs: 4))
        #expect(next.map { $0.rows.map(\.ticket) } == [[waiting!]] && q.sequencesWaitingForSlot == 0)
    }

    @Test func idleSequencesAreReleasedAndFreeTheirSlot() {
        var q = Self.queue(maxBatch: 1, idleUs: 100)
        let a = Self.batches(q.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0).1)[0]
        let finished = q.executionFinished(a, nowNs: 10)
        #expect(finished.contains(.wakeUp(atNs: 100_010)))
        #expect(!q.tick(nowNs: 100_009).contains(.released([.number(1)])))
        #expect(q.tick(nowNs: 100_010).contains(.released([.number(1)])))
        #expect(Self.rejection(q.enqueue(sequence: .number(1), start: false, end: false, nowNs: 100_020).1) != nil)
        #expect(!Self.batches(q.enqueue(sequence: .number(2), start: true, end: false, nowNs: 100_030).1).isEmpty)
    }

    @Test func aBatchTakesOneRequestPerSequence() {
        var q = Self.queue(maxBatch: 4)
        let s1 = Q.SequenceID.number(1), s2 = Q.SequenceID.number(2)
        let running = Self.batches(q.enqueue(sequence: s1, start: true, end: false, nowNs: 0).1)[0]
        _ = q.enqueue(sequence: s2, start: true, end: false, nowNs: 1)  // the instance is busy
        _ = q.enqueue(sequence: s1, start: false, end: false, nowNs: 2)
        _ = q.enqueue(sequence: s1, start: false, end: false, nowNs: 3)
        let next = Self.batches(q.executionFinished(running, nowNs: 4))
        #expect(next.count == 1 && Set(next[0].rows.map(\.sequence)) == [s1, s2] && next[0].rows.count == 2)
    }

    @Test func directWaitsForSlotUtilizationUpToTheDelay() {
        var q = Self.queue(maxBatch: 2, delayUs: 50, utilization: 1.0)
        // One live sequence: its one ready slot is full utilization.
        let a = Self.batches(q.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0).1)
        #expect(a.map { $0.rows.count } == [1])
        _ = q.executionFinished(a[0], nowNs: 1)
        // Two live sequences, one ready: wait (up to 50 µs) for the other.
        let (_, waiting) = q.enqueue(sequence: .number(2), start: true, end: false, nowNs: 2)
        #expect(Self.batches(waiting).isEmpty && waiting.contains(.wakeUp(atNs: 50_002)))
        let both = Self.batches(q.enqueue(sequence: .number(1), start: false, end: false, nowNs: 3).1)
        #expect(both.map { $0.rows.count } == [2])
        // The delay over, a partly ready batch goes anyway.
        var r = Self.queue(maxBatch: 2, delayUs: 50, utilization: 1.0)
        let first = Self.batches(r.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0).1)[0]
        _ = r.executionFinished(first, nowNs: 1)
        _ = r.enqueue(sequence: .number(2), start: true, end: false, nowNs: 2)
        #expect(Self.batches(r.tick(nowNs: 50_001)).isEmpty)
        #expect(Self.batches(r.tick(nowNs: 50_002)).map { $0.rows.map(\.sequence) } == [[.number(2)]])
    }

    @Test func oldestSendsAPreferredSizeAtOnceOrWaitsForTheDelay() {
        var q = Self.queue(maxBatch: 4, strategy: .oldest, delayUs: 100, preferred: [2])
        let (_, first) = q.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0)
        #expect(Self.batches(first).isEmpty && first.contains(.wakeUp(atNs: 100_000)))
        let second = Self.batches(q.enqueue(sequence: .number(2), start: true, end: false, nowNs: 10).1)
        #expect(second.map { $0.rows.count } == [2])
        var late = Self.queue(maxBatch: 4, strategy: .oldest, delayUs: 100, preferred: [2])
        _ = late.enqueue(sequence: .number(1), start: true, end: false, nowNs: 0)
        #expect(Self.batches(late.tick(nowNs: 100_000)).map { $0.rows.count } == [1])
    }

    @Test func configurationFollowsTheModelConfig() throws {
        let config = try ModelConfig.parse(text: """
            name: "m"
            max_batch_size: 4
            sequence_batching {
              max_sequence_idle_microseconds: 3000
              oldest { max_candidate_sequences: 8 preferred_batch_size: [ 4, 2 ] max_queue_delay_microseconds: 70 }
            }
            """)
        let c = Q.Configuration(config.sequenceBatching, maxBatchSize: config.maxBatchSize, instanceCount: 3)
        #expect(c.slotCount == 12 && c.idleNs == 3_000_000 && c.strategy == .oldest)
        #expect(c.preferredBatchSizes == [2, 4] && c.maxQueueDelayNs == 70_000)
        let defaults = Q.Configuration(Inference_ModelSequenceBatching(), maxBatchSize: 0, instanceCount: 1)
        #expect(defaults.slotCount == 1 && defaults.idleNs == 1_000_000_000 && defaults.strategy == .direct)
    }
}
