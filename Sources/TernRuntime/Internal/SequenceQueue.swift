import TernCore

/// The sequence batcher's decisions (Triton's `sequence_batching`) as a state machine with no I/O
/// and no clock; `SequenceScheduler` carries out its actions.
///
/// - A sequence starts with a request flagged START and holds a slot until the request flagged
///   END has executed, or until it has been idle for `max_sequence_idle_microseconds` (then it is
///   released and a later request for it is an error). There are `max_batch_size` × instances
///   slots (one when the model does not batch); a new sequence beyond them waits for a slot.
/// - A batch takes at most one request per sequence (a sequence's requests run one after another,
///   in order), up to `max_batch_size` sequences. `direct`: sequences in slot order, sent when
///   enough slots are ready (`minimum_slot_utilization`) or the oldest waited
///   `max_queue_delay_microseconds`. `oldest`: the sequences whose next request is oldest, sent at
///   once at a preferred size or the maximum, otherwise after the queue delay.
/// - Errors (answered 400): no sequence id; a first request without START; a request after END or
///   after the sequence was released for idling.
struct SequenceQueue {
    enum Strategy: Sendable, Equatable { case direct, oldest }

    struct Configuration: Sendable, Equatable {
        var maxBatchSize = 1
        var instanceCount = 1
        var idleNs: UInt64 = 1_000_000_000
        var strategy = Strategy.direct
        var maxQueueDelayNs: UInt64 = 0
        var minimumSlotUtilization: Float = 0
        var preferredBatchSizes: [Int] = []
        var slotCount: Int { max(maxBatchSize, 1) * max(instanceCount, 1) }
    }

    enum SequenceID: Hashable, Sendable, CustomStringConvertible {
        case number(UInt64)
        case text(String)
        var description: String {
            switch self {
            case .number(let n): String(n)
            case .text(let s): s
            }
        }
    }

    typealias Ticket = UInt64

    struct Row: Sendable, Equatable {
        var ticket: Ticket
        var sequence: SequenceID
        var start: Bool
        var end: Bool
    }

    struct Batch: Sendable, Equatable {
        var instance: Int
        var rows: [Row]
    }

    enum Action: Sendable, Equatable {
        case dispatch(Batch)
        case reject(Ticket, String)
        /// These executed requests' results may go back.
        case deliver([Ticket])
        /// These sequences are over (END executed, or idle): drop what is kept for them.
        case released([SequenceID])
        case wakeUp(atNs: UInt64)
    }

    private struct Pending {
        var ticket: Ticket
        var start: Bool
        var end: Bool
        var arrivalNs: UInt64
    }

    private struct Sequence {
        var slot: Int?
        var pending: [Pending] = []
        var inFlight = false
        /// END has been received (later requests are refused).
        var ended = false
        var lastActivityNs: UInt64
    }

    let configuration: Configuration
    private let modelName: String
    private var sequences: [SequenceID: Sequence] = [:]
    private var waitingForSlot: [SequenceID] = []
    private var freeSlots: [Int]
    private var freeInstances: [Int]
    private var nextTicket: Ticket = 1
    private var scheduledWakeUpNs: UInt64?

    init(configuration: Configuration, modelName: String) {
        self.configuration = configuration
        self.modelName = modelName
        freeSlots = Array((0..<configuration.slotCount).reversed())
        freeInstances = Array((0..<max(configuration.instanceCount, 1)).reversed())
    }

    var liveSequences: Int { sequences.count }
    var sequencesWaitingForSlot: Int { waitingForSlot.count }

    mutating func enqueue(sequence: SequenceID?, start: Bool, end: Bool, nowNs: UInt64) -> (Ticket?, [Action]) {
        let ticket = nextTicket
        nextTicket += 1
        guard let sequence else {
            return (nil, [.reject(ticket, "inference request to model '\(modelName)' must specify a non-zero or non-empty correlation ID")])
        }
        let pending = Pending(ticket: ticket, start: start, end: end, arrivalNs: nowNs)
        if var existing = sequences[sequence] {
            guard !existing.ended else {
                let message = start
                    ? "inference request for sequence \(sequence) to model '\(modelName)' starts it again before its END has executed"
                    : Self.notStarted(sequence, modelName)
                return (nil, [.reject(ticket, message)])
            }
            // START on a live sequence begins it anew in the same slot (its state resets then).
            existing.pending.append(pending)
            existing.ended = end
            existing.lastActivityNs = nowNs
            sequences[sequence] = existing
        } else {
            guard start else { return (nil, [.reject(ticket, Self.notStarted(sequence, modelName))]) }
            var fresh = Sequence(slot: nil, lastActivityNs: nowNs)
            fresh.pending = [pending]
            fresh.ended = end
            if let slot = freeSlots.popLast() {
                fresh.slot = slot
            } else {
                waitingForSlot.append(sequence)
            }
            sequences[sequence] = fresh
        }
        return (ticket, schedule(nowNs: nowNs))
    }

    static func notStarted(_ sequence: SequenceID, _ model: String) -> String {
        "inference request for sequence \(sequence) to model '\(model)' must specify the START flag on the first request of the sequence"
    }

    mutating func executionFinished(_ batch: Batch, nowNs: UInt64) -> [Action] {
        freeInstances.append(batch.instance)
        var released: [SequenceID] = []
        for row in batch.rows {
            guard var sequence = sequences[row.sequence] else { continue }
            sequence.inFlight = false
            sequence.lastActivityNs = nowNs
            if row.end {
                release(row.sequence, slot: sequence.slot)
                released.append(row.sequence)
            } else {
                sequences[row.sequence] = sequence
            }
        }
        var actions: [Action] = [.deliver(batch.rows.map(\.ticket))]
        if !released.isEmpty { actions.append(.released(released)) }
        return actions + schedule(nowNs: nowNs)
    }

    mutating func tick(nowNs: UInt64) -> [Action] {
        if let scheduled = scheduledWakeUpNs, scheduled <= nowNs { scheduledWakeUpNs = nil }
        var idle: [SequenceID] = []
        for (id, sequence) in sequences
        where sequence.slot != nil && sequence.pending.isEmpty && !sequence.inFlight && sequence.lastActivityNs &+ configuration.idleNs <= nowNs {
            idle.append(id)
        }
        for id in idle { release(id, slot: sequences[id]?.slot) }
        return (idle.isEmpty ? [] : [.released(idle)]) + schedule(nowNs: nowNs)
    }

    private mutating func release(_ id: SequenceID, slot: Int?) {
        sequences[id] = nil
        guard let slot else { return }
        if let next = waitingForSlot.first {
            waitingForSlot.removeFirst()
            sequences[next]?.slot = slot
        } else {
            freeSlots.append(slot)
        }
    }

    private mutating func schedule(nowNs: UInt64) -> [Action] {
        var actions: [Action] = []
        var waitUntil: UInt64? = nil
        while !freeInstances.isEmpty {
            var ready = sequences.filter { $0.value.slot != nil && !$0.value.inFlight && !$0.value.pending.isEmpty }
                .map { (id: $0.key, slot: $0.value.slot!, arrival: $0.value.pending[0].arrivalNs) }
            guard !ready.isEmpty else { break }
            switch configuration.strategy {
            case .direct: ready.sort { $0.slot < $1.slot }
            case .oldest: ready.sort { ($0.arrival, $0.slot) < ($1.arrival, $1.slot) }
            }
            let limit = max(configuration.maxBatchSize, 1)
            let oldest = ready.map(\.arrival).min()!
            let delayOver = nowNs >= oldest &+ configuration.maxQueueDelayNs
            var take = min(ready.count, limit)
            if !delayOver {
                switch configuration.strategy {
                case .direct:
                    let active = sequences.values.filter { $0.slot != nil }.count
                    let wanted = Int((configuration.minimumSlotUtilization * Float(min(active, limit))).rounded(.up))
                    if take < max(wanted, 1) {
                        waitUntil = oldest &+ configuration.maxQueueDelayNs
                        take = 0
                    }
                case .oldest:
                    if take < limit {
                        if let preferred = configuration.preferredBatchSizes.filter({ $0 <= take }).max() {
                            take = preferred
                        } else {
                            waitUntil = oldest &+ configuration.maxQueueDelayNs
                            take = 0
                        }
                    }
                }
            }
            if take == 0 { break }
            var rows: [Row] = []
            for candidate in ready.prefix(take) {
                var sequence = sequences[candidate.id]!
                let next = sequence.pending.removeFirst()
                sequence.inFlight = true
                sequence.lastActivityNs = nowNs
                sequences[candidate.id] = sequence
                rows.append(Row(ticket: next.ticket, sequence: candidate.id, start: next.start, end: next.end))
            }
            actions.append(.dispatch(Batch(instance: freeInstances.removeLast(), rows: rows)))
        }
        // Wake for the next idle release or the end of a queue delay.
        var wake = waitUntil
        for sequence in sequences.values where sequence.slot != nil && sequence.pending.isEmpty && !sequence.inFlight {
            wake = min(wake ?? .max, sequence.lastActivityNs &+ configuration.idleNs)
        }
        if let wake, scheduledWakeUpNs.map({ wake < $0 }) ?? true {
            scheduledWakeUpNs = wake
            actions.append(.wakeUp(atNs: wake))
        }
        return actions
    }
}

extension SequenceQueue.Configuration {
    init(_ sequencing: Inference_ModelSequenceBatching, maxBatchSize: Int32, instanceCount: Int) {
        self.init()
        self.maxBatchSize = max(Int(maxBatchSize), 1)
        self.instanceCount = max(instanceCount, 1)
        if sequencing.maxSequenceIdleMicroseconds > 0 { idleNs = sequencing.maxSequenceIdleMicroseconds &* 1000 }
        switch sequencing.strategyChoice {
        case .oldest(let oldest)?:
            strategy = .oldest
            maxQueueDelayNs = oldest.maxQueueDelayMicroseconds &* 1000
            preferredBatchSizes = oldest.preferredBatchSize.map(Int.init).sorted()
        case .direct(let direct)?:
            strategy = .direct
            maxQueueDelayNs = direct.maxQueueDelayMicroseconds &* 1000
            minimumSlotUtilization = direct.minimumSlotUtilization
        case nil:
            strategy = .direct
        }
    }
}
