import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization
import TernCore

/// Takes experiment records on the request path and writes them to the store in batches on its
/// own thread (started by `start`, never by the initializer). The buffer is bounded: when the store falls behind and it is full, records are
/// dropped and counted (`tern_ab_records_dropped_total`) — requests are never slowed. A crash
/// loses at most what the buffer held (at most `flushInterval` worth of records).
///
/// The buffer is split into shards picked by the calling thread, so that event-loop threads
/// recording at once do not take turns on one lock (nor pass its cache line back and forth).
/// After each write, an observer (the experiments' in-memory tallies) sees the records, on the
/// writer's thread: the request path does nothing more than queue one record.
public final class ExperimentRecorder: Sendable {
    /// The store the batches are written to.
    public let store: ExperimentStore
    /// Records the buffer holds at most, a `shardCount`th of them in each shard.
    public let capacity: Int
    private let shardCapacity: Int
    /// The longest the writer thread waits between two writes.
    public let flushInterval: Duration
    /// The number of shards the buffer is split into.
    public static let shardCount = 4
    private let shards: [Shard]
    /// The shards' buffers being written (held by one flush at a time): swapped with the full
    /// ones, so that neither is reallocated (emptying a buffer that a batch still shares would copy it).
    private let spares = Mutex<[[ExperimentRecord]]>(Array(repeating: [], count: ExperimentRecorder.shardCount))
    private let observer = Mutex<(@Sendable (_ experiment: String, _ records: ArraySlice<ExperimentRecord>) -> Void)?>(nil)
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic(false)
    private let started = Atomic(false)
    private let finished = DispatchSemaphore(value: 0)
    private let droppedCount = Atomic(0)
    private let logger: Logger
    private let dropped: Counter

    /// Makes a recorder that buffers up to `capacity` records for `store` and writes them every `flushInterval` once
    /// started.
    public init(store: ExperimentStore, capacity: Int = 16_384, flushInterval: Duration = .milliseconds(100), logger: Logger) {
        self.store = store
        self.capacity = max(capacity, 1)
        shardCapacity = max(capacity / Self.shardCount, 1)
        self.flushInterval = flushInterval
        self.logger = logger
        shards = (0..<Self.shardCount).map { _ in Shard() }
        dropped = Counter(label: "tern_ab_records_dropped_total")
    }

    /// Starts the writer thread (once; `ExperimentManager.run` does). Until then, and without it,
    /// records wait for `flush` or `shutdown`.
    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in run() }
        thread.name = "tern-ab-recorder"
        thread.start()
    }

    /// Sets what sees every record after its batch was written (or failed to be), on the writer's
    /// thread, in runs of one experiment's records.
    public func observe(_ body: @escaping @Sendable (_ experiment: String, _ records: ArraySlice<ExperimentRecord>) -> Void) {
        observer.withLock { $0 = body }
    }

    /// The calling thread's shard (threads spread by a multiplicative hash of their id).
    private var shard: Int {
        Int((UInt64(pthread_self()) &* 0x9E37_79B9_7F4A_7C15) >> 62) % Self.shardCount
    }

    /// Queues a record; false (and counted) when the buffer is full.
    @discardableResult
    public func record(_ record: ExperimentRecord) -> Bool {
        let (accepted, count) = shards[shard].records.withLock { buffer -> (Bool, Int) in
            guard buffer.count < shardCapacity else { return (false, buffer.count) }
            buffer.append(record)
            return (true, buffer.count)
        }
        if !accepted {
            droppedCount.add(1, ordering: .relaxed)
            dropped.increment()
        } else if count == shardCapacity / 2 {
            wake.signal()  // half full: write now rather than at the next tick
        }
        return accepted
    }

    /// Records dropped so far because the buffer was full or their write failed.
    public var droppedRecords: Int { droppedCount.load(ordering: .relaxed) }

    /// Writes what is buffered now, on the caller's thread.
    public func flush() {
        spares.withLock { batches in
            for index in shards.indices { shards[index].records.withLock { swap(&batches[index], &$0) } }
            defer { for index in batches.indices { batches[index].removeAll(keepingCapacity: true) } }
            let count = batches.reduce(0) { $0 + $1.count }
            guard count > 0 else { return }
            do {
                try store.insert(batches)
            } catch {
                droppedCount.add(count, ordering: .relaxed)
                dropped.increment(by: count)
                logger.error("cannot write experiment records", metadata: ["records": .stringConvertible(count), "error": .string("\(error)")])
            }
            guard let observe = observer.withLock({ $0 }) else { return }
            for batch in batches {
                var start = 0
                while start < batch.count {
                    let name = batch[start].experiment
                    var end = start + 1
                    while end < batch.count && batch[end].experiment == name { end += 1 }
                    observe(name, batch[start..<end])
                    start = end
                }
            }
        }
    }

    /// Writes what is left and stops the writer thread (if it was started).
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        guard started.load(ordering: .relaxed) else { return flush() }
        wake.signal()
        finished.wait()
    }

    private func run() {
        while !stopping.load(ordering: .relaxed) {
            _ = wake.wait(timeout: .now() + .nanoseconds(Int(flushInterval.nanoseconds)))
            flush()
        }
        flush()
        finished.signal()
    }
}

/// One shard of the recorder's buffer, padded so that two shards never share a cache line.
private final class Shard: Sendable {
    let records = Mutex<[ExperimentRecord]>([])
    private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
}
