import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// An event in an experiment's life: created, weight changed, stopped by a guardrail, promoted.
public struct ExperimentEvent: Sendable, Equatable, Codable {
    /// When the event happened, in seconds since 1970.
    public var time: Double
    /// Name of the experiment the event belongs to.
    public var experiment: String
    /// What happened: "created", "stopped", "deleted", "promoted", "canary_step" or "canary_check_failed".
    public var kind: String
    /// Particulars in words, such as the weights, the stop reason or the winner.
    public var detail: String
}
