import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

extension ExperimentRecorder {
    /// An id of the kind an experiment gives requests that came without one.
    public static func generatedRequestID() -> String { RequestIDs.next() }
}

/// Ids for requests that came without one: 15 characters, 42 random bits drawn once per process
/// then a 48-bit counter, six bits a character — unique across restarts (two processes share a
/// prefix with odds of 1 in 2^42) and short enough to be a Swift small string: making, copying
/// and freeing one touches no heap. The digits are in ASCII order, so a process's ids sort by
/// their counter (which wraps after 2^48: 89 years at 100 000 requests a second).
enum RequestIDs {
    private static let prefix = UInt64.random(in: 0..<(1 << 42))
    private static let counter = Atomic<UInt64>(0)
    static let length = 15

    static func next() -> String {
        format(counter.add(1, ordering: .relaxed).newValue)
    }

    static func format(_ n: UInt64) -> String {
        let digits: StaticString = ".0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
        let low = n & ((1 << 48) - 1)
        return String(unsafeUninitializedCapacity: length) { bytes in
            for i in 0..<7 { bytes[i] = digits.utf8Start[Int((prefix >> UInt64(6 * (6 - i))) & 63)] }
            for i in 0..<8 { bytes[7 + i] = digits.utf8Start[Int((low >> UInt64(6 * (7 - i))) & 63)] }
            return length
        }
    }
}
