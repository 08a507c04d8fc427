import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// What a report needs of one variant, read back from the store.
public struct VariantData: Sendable, Equatable {
    /// Records of the variant, answered and failed.
    public var requests = 0
    /// Records whose request failed.
    public var errors = 0
    /// Latencies of the answered requests, in ms.
    public var latenciesMs: [Double] = []
    /// Sum of the confidences of the answered requests that had one.
    public var confidenceSum = 0.0
    /// Answered requests that had a confidence (the divisor of `confidenceSum`).
    public var confidenceCount = 0
    /// Answered requests with a feedback label, and how many of them were predicted right.
    public var labelled = 0
    /// Labelled answers whose prediction equals the label.
    public var correct = 0
    /// Whether the variant is a shadow (mirrored to, never answering the client).
    public var shadow = false

    /// Makes empty data: no requests, no latencies, not a shadow.
    public init() {}
}
