import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization
import TernCore

/// Takes experiment records on the request path and writes them to the store in batches on its
/// own thread. The buffer is bounded: when the store falls behind and it is full, records are
/// dropped and counted (`tern_ab_records_dropped_total`) — requests are never slowed. A crash
/// loses at most what the buffer held (at most `flushInterval` worth of records).
public final class ExperimentRecorder: Sendable {
    public let store: ExperimentStore
    public let capacity: Int
    public let flushInterval: Duration
    private let buffer: Mutex<[ExperimentRecord]>
    /// The buffer being written (held by one flush at a time).
    private let spare = Mutex<[ExperimentRecord]>([])
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic(false)
    private let finished = DispatchSemaphore(value: 0)
    private let droppedCount = Atomic(0)
    private let logger: Logger
    private let dropped: Counter

    public init(store: ExperimentStore, capacity: Int = 8192, flushInterval: Duration = .milliseconds(100), logger: Logger) {
        self.store = store
        self.capacity = max(capacity, 1)
        self.flushInterval = flushInterval
        self.logger = logger
        buffer = Mutex([])
        dropped = Counter(label: "tern_ab_records_dropped_total")
        let thread = Thread { [self] in run() }
        thread.name = "tern-ab-recorder"
        thread.start()
    }

    /// Queues a record; false (and counted) when the buffer is full.
    @discardableResult
    public func record(_ record: ExperimentRecord) -> Bool {
        let (accepted, count) = buffer.withLock { buffer -> (Bool, Int) in
            guard buffer.count < capacity else { return (false, buffer.count) }
            buffer.append(record)
            return (true, buffer.count)
        }
        if !accepted {
            droppedCount.add(1, ordering: .relaxed)
            dropped.increment()
        } else if count == capacity / 2 {
            wake.signal()  // half full: write now rather than at the next tick
        }
        return accepted
    }

    public var droppedRecords: Int { droppedCount.load(ordering: .relaxed) }

    /// Writes what is buffered now, on the caller's thread.
    public func flush() {
        // Double buffering: the full buffer is swapped with the emptied one of the last flush, so
        // neither is reallocated (emptying a buffer that a batch still shares would copy it).
        spare.withLock { batch in
            buffer.withLock { swap(&batch, &$0) }
            defer { batch.removeAll(keepingCapacity: true) }
            guard !batch.isEmpty else { return }
            do {
                try store.insert(batch)
            } catch {
                droppedCount.add(batch.count, ordering: .relaxed)
                dropped.increment(by: batch.count)
                logger.error("cannot write experiment records", metadata: ["records": .stringConvertible(batch.count), "error": .string("\(error)")])
            }
        }
    }

    /// Writes what is left and stops the writer thread.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
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
