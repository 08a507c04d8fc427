import Foundation
import TernCore

/// What the owner of a `ModelLifecycle` does after a transition, outside its lock.
enum LifecycleAction<Model: LifecycleModel>: Sendable {
    /// Drop this set (its sessions go once the requests running on it let go).
    case release(Model)
    /// It is this caller's turn: resume it to begin.
    case wake(UInt64)
    /// Answer these waiting callers with a result they share.
    case resume([UInt64], Result<SwapReport, TernError>)
    case record(LifecycleEvent)
    /// Write the decisions that outlive a restart. The owner writes the decisions current when it
    /// writes (not these, which a later transition may have replaced), one write at a time.
    case persist(ModelDecisions)
    /// The decisions are gone (the model left the repository).
    case forget
    /// Call `warmExpired(generation:)` after this many seconds.
    case expireWarm(generation: UInt64, afterSeconds: Double)
    /// A rejected first load left nothing serving: load these versions (ungated), as before,
    /// unless the served set has changed since `generation` (pass it to `beginLoad`).
    case restore([Int64], generation: UInt64)
}
