import TernCore

/// The scheduling decisions of one model version as a state machine with no I/O and no clock:
/// requests are queued by priority level, grouped into batches for free instances, timed out, and
/// (with `preserve_ordering`) released in arrival order. Every transition takes the current time
/// in nanoseconds and returns the actions its owner (`BatchScheduler`) carries out.
///
/// Triton's dynamic batcher rules, as documented:
/// - strict priority: level 1 first; within a level, arrival order; a timed-out request whose
///   policy is DELAY goes after the level's requests that have not timed out;
/// - a batch takes requests in that order while their rows fit `max_batch_size` and their
///   non-batch shapes equal the first request's (requests of other shapes are not merged);
/// - it is sent at once when it reaches `max_batch_size` (or cannot grow: the next request does not
///   fit), or when a prefix of it has a preferred size (then the largest such prefix is sent);
///   otherwise it waits until its oldest request has waited `max_queue_delay_microseconds`;
/// - a queue full at its level (`max_queue_size`, 0 = no limit) rejects the request; a request
///   past its timeout (`default_timeout_microseconds`, or the request's own when
///   `allow_timeout_override` lets it shorten the default) is rejected (REJECT) or demoted (DELAY).
/// Without dynamic batching every batch is one request (Triton's default scheduler).
struct BatchQueue {
    enum TimeoutAction: Sendable, Equatable { case reject, delay }

    struct QueuePolicy: Sendable, Equatable {
        var timeoutAction: TimeoutAction = .reject
        var defaultTimeoutNs: UInt64 = 0
        var allowTimeoutOverride = false
        var maxQueueSize = 0
    }

    struct Configuration: Sendable, Equatable {
        /// Whether requests are merged (dynamic batching); false: one request per execution.
        var batching = false
        var maxBatchSize = 1
        var preferredBatchSizes: [Int] = []
        var maxQueueDelayNs: UInt64 = 0
        /// 0: one level.
        var priorityLevels = 0
        var defaultPriorityLevel = 0
        var defaultPolicy = QueuePolicy()
        /// Per level (1-based), overriding `defaultPolicy`.
        var levelPolicies: [Int: QueuePolicy] = [:]
        var preserveOrdering = false
        var instanceCount = 1

        var levelCount: Int { max(priorityLevels, 1) }
        func policy(level: Int) -> QueuePolicy { levelPolicies[level] ?? defaultPolicy }
    }

    typealias Ticket = UInt64

    enum Rejection: Sendable, Equatable {
        case queueFull, timedOut
        var message: String {
            switch self {
            case .queueFull: "Exceeds maximum queue size"
            case .timedOut: "Request timeout expired"
            }
        }
    }

    struct Batch: Sendable, Equatable {
        var instance: Int
        var tickets: [Ticket]
        var rows: Int
    }

    enum Action: Sendable, Equatable {
        /// Run these requests together on `instance`.
        case dispatch(Batch)
        /// Answer this request with an error; it leaves the queue.
        case reject(Ticket, Rejection)
        /// Hand these executed requests' results back (in this order).
        case deliver([Ticket])
        /// Call `tick` at (or soon after) this time.
        case wakeUp(atNs: UInt64)
    }

    private struct Entry {
        var ticket: Ticket
        var rows: Int
        var shapeKey: [Int64]
        var arrivalNs: UInt64
        var deadlineNs: UInt64?
        var level: Int
        var timeoutAction: TimeoutAction
    }

    private(set) var configuration: Configuration
    /// Per level (index level - 1): requests in arrival order, then the delayed ones.
    private var waiting: [[Entry]]
    private var delayed: [[Entry]]
    private var freeInstances: [Int]
    private var nextTicket: Ticket = 1
    /// preserve_ordering: tickets in dispatch order not yet delivered, and finished ones held back.
    private var order: [Ticket] = []
    private var finished: Set<Ticket> = []
    private var scheduledWakeUpNs: UInt64?
    /// The batch limit before `batchScale` (the configured one, or adaptive batching's).
    private var tunedMaxBatchSize: Int
    private(set) var batchScale = 1.0

    init(configuration: Configuration) {
        self.configuration = configuration
        tunedMaxBatchSize = configuration.maxBatchSize
        waiting = Array(repeating: [], count: configuration.levelCount)
        delayed = Array(repeating: [], count: configuration.levelCount)
        freeInstances = Array((0..<max(configuration.instanceCount, 1)).reversed())
    }

    /// Requests waiting (not yet dispatched).
    var queuedCount: Int { waiting.reduce(0) { $0 + $1.count } + delayed.reduce(0) { $0 + $1.count } }
    var idleInstances: Int { freeInstances.count }

    /// Changes the batch limit and queue delay (adaptive batching); takes effect for the next batch.
    mutating func tune(maxBatchSize: Int, maxQueueDelayNs: UInt64) {
        tunedMaxBatchSize = max(maxBatchSize, 1)
        configuration.maxQueueDelayNs = maxQueueDelayNs
        applyBatchScale()
    }

    /// Scales the batch limit by `scale` in (0, 1] on top of the configured or tuned one (the
    /// device policy's throttling); 1 restores it. Takes effect for the next batch.
    mutating func scaleBatches(_ scale: Double) {
        batchScale = min(max(scale, 0), 1)
        applyBatchScale()
    }

    private mutating func applyBatchScale() {
        configuration.maxBatchSize = max(1, Int((Double(tunedMaxBatchSize) * batchScale).rounded(.down)))
    }

    /// Whether a request of `rows` rows queued now would be sent at once, alone: nothing waits, an
    /// instance is free and no batching delay applies. Lets a caller run it on its own thread.
    func wouldDispatchAlone(rows: Int) -> Bool {
        guard queuedCount == 0, !freeInstances.isEmpty else { return false }
        return !configuration.batching || configuration.maxQueueDelayNs == 0
            || configuration.preferredBatchSizes.contains(rows) || rows >= configuration.maxBatchSize
    }

    /// Takes a free instance for a request that would be sent alone at once, without queueing it:
    /// the caller runs the request and then calls `instanceReleased`. nil when the request would
    /// have to wait (or with `preserve_ordering`, where every request takes its place in line).
    mutating func claimForImmediateRun(rows: Int) -> Int? {
        guard !configuration.preserveOrdering, wouldDispatchAlone(rows: rows) else { return nil }
        return freeInstances.removeLast()
    }

    /// An instance taken by `claimForImmediateRun` is free again.
    mutating func instanceReleased(_ instance: Int, nowNs: UInt64) -> [Action] {
        freeInstances.append(instance)
        return schedule(nowNs: nowNs)
    }

    /// The priority level a request's `priority` parameter selects: 0 or out of range → default.
    func level(forPriority priority: UInt64) -> Int {
        let levels = UInt64(configuration.levelCount)
        if priority >= 1, priority <= levels, configuration.priorityLevels > 0 { return Int(priority) }
        return min(max(configuration.defaultPriorityLevel, 1), configuration.levelCount)
    }

    /// Queues a request of `rows` batch rows whose inputs have the non-batch dims `shapeKey`.
    /// Returns its ticket (nil when rejected, with the reason in the actions).
    mutating func enqueue(
        rows: Int, shapeKey: [Int64], priority: UInt64, timeoutMicroseconds: UInt64, nowNs: UInt64
    ) -> (Ticket?, [Action]) {
        let level = level(forPriority: priority)
        let policy = configuration.policy(level: level)
        let ticket = nextTicket
        nextTicket += 1
        if policy.maxQueueSize > 0, waiting[level - 1].count + delayed[level - 1].count >= policy.maxQueueSize {
            return (nil, [.reject(ticket, .queueFull)])
        }
        var timeoutNs = policy.defaultTimeoutNs
        let requested = timeoutMicroseconds.multipliedReportingOverflow(by: 1000)
        if policy.allowTimeoutOverride, timeoutMicroseconds > 0, !requested.overflow, requested.partialValue < timeoutNs {
            timeoutNs = requested.partialValue
        }
        let entry = Entry(
            ticket: ticket, rows: max(rows, 1), shapeKey: shapeKey, arrivalNs: nowNs,
            deadlineNs: timeoutNs > 0 ? nowNs &+ timeoutNs : nil, level: level, timeoutAction: policy.timeoutAction)
        waiting[level - 1].append(entry)
        return (ticket, schedule(nowNs: nowNs))
    }

    /// An instance finished `batch`: it is free again, and its requests' results may be delivered.
    mutating func executionFinished(_ batch: Batch, nowNs: UInt64) -> [Action] {
        freeInstances.append(batch.instance)
        var actions: [Action] = []
        if configuration.preserveOrdering {
            finished.formUnion(batch.tickets)
            var ready: [Ticket] = []
            while let first = order.first, finished.remove(first) != nil {
                ready.append(first)
                order.removeFirst()
            }
            if !ready.isEmpty { actions.append(.deliver(ready)) }
        } else {
            actions.append(.deliver(batch.tickets))
        }
        return actions + schedule(nowNs: nowNs)
    }

    /// Time passed: expire requests and send batches whose delay is over.
    mutating func tick(nowNs: UInt64) -> [Action] {
        if let scheduled = scheduledWakeUpNs, scheduled <= nowNs { scheduledWakeUpNs = nil }
        return schedule(nowNs: nowNs)
    }

    // MARK: - Decisions

    private mutating func schedule(nowNs: UInt64) -> [Action] {
        var actions = expire(nowNs: nowNs)
        while !freeInstances.isEmpty, let batch = nextBatch(nowNs: nowNs) {
            let instance = freeInstances.removeLast()
            if configuration.preserveOrdering { order.append(contentsOf: batch.tickets) }
            actions.append(.dispatch(Batch(instance: instance, tickets: batch.tickets, rows: batch.rows)))
        }
        if let wake = nextWakeUp(nowNs: nowNs), scheduledWakeUpNs.map({ wake < $0 }) ?? true {
            scheduledWakeUpNs = wake
            actions.append(.wakeUp(atNs: wake))
        }
        return actions
    }

    /// Rejects or demotes requests whose deadline has passed.
    private mutating func expire(nowNs: UInt64) -> [Action] {
        var actions: [Action] = []
        for level in waiting.indices {
            guard waiting[level].contains(where: { ($0.deadlineNs ?? .max) <= nowNs }) else { continue }
            var kept: [Entry] = []
            for var entry in waiting[level] {
                if let deadline = entry.deadlineNs, deadline <= nowNs {
                    switch entry.timeoutAction {
                    case .reject:
                        actions.append(.reject(entry.ticket, .timedOut))
                    case .delay:
                        entry.deadlineNs = nil
                        delayed[level].append(entry)
                    }
                } else {
                    kept.append(entry)
                }
            }
            waiting[level] = kept
        }
        return actions
    }

    /// The requests in the order batches take them.
    private func candidates() -> [(level: Int, delayed: Bool, index: Int)] {
        var list: [(Int, Bool, Int)] = []
        for level in waiting.indices {
            list += waiting[level].indices.map { (level, false, $0) }
            list += delayed[level].indices.map { (level, true, $0) }
        }
        return list
    }

    private func entry(_ position: (level: Int, delayed: Bool, index: Int)) -> Entry {
        position.delayed ? delayed[position.level][position.index] : waiting[position.level][position.index]
    }

    /// The next batch to send now, removed from the queues; nil when none should go yet.
    private mutating func nextBatch(nowNs: UInt64) -> (tickets: [Ticket], rows: Int)? {
        let order = candidates()
        guard let firstPosition = order.first else { return nil }
        let first = entry(firstPosition)
        var taken = [firstPosition]
        var rows = first.rows
        var closed = !configuration.batching
        /// Prefix lengths (in requests) whose rows are a preferred size.
        var preferredPrefix: Int? = configuration.preferredBatchSizes.contains(rows) ? 1 : nil
        if configuration.batching {
            for position in order.dropFirst() {
                let next = entry(position)
                guard next.shapeKey == first.shapeKey, rows + next.rows <= configuration.maxBatchSize else {
                    closed = true
                    break
                }
                taken.append(position)
                rows += next.rows
                if configuration.preferredBatchSizes.contains(rows) { preferredPrefix = taken.count }
            }
            if rows >= configuration.maxBatchSize { closed = true }
        }
        var count = taken.count
        if !closed {
            let oldest = taken.map { entry($0).arrivalNs }.min() ?? nowNs
            let delayOver = nowNs >= oldest &+ configuration.maxQueueDelayNs
            if delayOver {
                // Waited long enough: send everything that fits.
            } else if let preferredPrefix {
                // A preferred size is reachable now: send the largest one without waiting.
                count = preferredPrefix
            } else {
                return nil
            }
        }
        let chosen = Array(taken.prefix(count))
        let tickets = chosen.map { entry($0).ticket }
        let total = chosen.reduce(0) { $0 + entry($1).rows }
        remove(chosen)
        return (tickets, total)
    }

    private mutating func remove(_ positions: [(level: Int, delayed: Bool, index: Int)]) {
        // Highest indices first, so earlier indices stay valid.
        for position in positions.sorted(by: { $0.index > $1.index }) {
            if position.delayed { delayed[position.level].remove(at: position.index) } else { waiting[position.level].remove(at: position.index) }
        }
    }

    /// When something changes without a new event: the earliest deadline, or the end of the
    /// oldest waiting request's queue delay (only while an instance is free to take it).
    private func nextWakeUp(nowNs: UInt64) -> UInt64? {
        var wake: UInt64? = nil
        for level in waiting.indices {
            for entry in waiting[level] {
                if let deadline = entry.deadlineNs { wake = min(wake ?? .max, deadline) }
            }
        }
        if !freeInstances.isEmpty, configuration.batching, let first = candidates().first {
            let delayEnd = entry(first).arrivalNs &+ configuration.maxQueueDelayNs
            if delayEnd > nowNs { wake = min(wake ?? .max, delayEnd) }
        }
        return wake
    }
}

extension BatchQueue.Configuration {
    /// The scheduling settings of a model config (Triton's field meanings).
    init(config: ModelConfig, instanceCount: Int) {
        self.init()
        self.instanceCount = max(instanceCount, 1)
        guard case .dynamicBatching(let dynamic)? = config.schedulingChoice else { return }
        batching = config.maxBatchSize > 0
        maxBatchSize = max(Int(config.maxBatchSize), 1)
        preferredBatchSizes = dynamic.preferredBatchSize.map(Int.init).sorted()
        maxQueueDelayNs = dynamic.maxQueueDelayMicroseconds &* 1000
        priorityLevels = Int(dynamic.priorityLevels)
        defaultPriorityLevel = Int(dynamic.defaultPriorityLevel)
        preserveOrdering = dynamic.preserveOrdering
        if dynamic.hasDefaultQueuePolicy { defaultPolicy = BatchQueue.QueuePolicy(dynamic.defaultQueuePolicy) }
        for (level, policy) in dynamic.priorityQueuePolicy { levelPolicies[Int(level)] = BatchQueue.QueuePolicy(policy) }
    }
}

extension BatchQueue.QueuePolicy {
    init(_ policy: Inference_ModelQueuePolicy) {
        self.init(
            timeoutAction: policy.timeoutAction == .delay ? .delay : .reject,
            defaultTimeoutNs: policy.defaultTimeoutMicroseconds &* 1000,
            allowTimeoutOverride: policy.allowTimeoutOverride,
            maxQueueSize: Int(policy.maxQueueSize))
    }
}
