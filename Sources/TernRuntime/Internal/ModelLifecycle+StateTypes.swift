import Foundation
import TernCore

/// The values a `ModelLifecycle` is made of: what is served, the turn in progress, and the callers
/// waiting for one.
extension ModelLifecycle {
    /// A set of versions that took traffic, and the generation it took it in.
    struct Served: Sendable {
        var model: Model
        var generation: UInt64
    }

    /// What is served.
    enum State: Sendable {
        /// Known by name only: never loaded (or forgotten).
        case absent
        case unavailable(reason: String)
        /// `warm` is the set replaced by the last swap, kept loaded during the grace period so a
        /// rollback is instant.
        case serving(Served, warm: Served?)
    }

    /// What a caller waits for its turn to do.
    enum Request: Sendable, Hashable {
        case load(VersionChoice, gated: Bool, action: String)
        case rollback
    }

    /// A load in progress. `id` is the ticket of the caller performing it.
    struct Attempt: Sendable, Equatable {
        var id: UInt64
        /// nil: the version policy chooses.
        var versions: [Int64]?
        var choice: VersionChoice
        var gated: Bool
        var action: String
        var fingerprint: String
        var fromVersions: [Int64]
        /// Set when an unload overtook the load: its result is released, not served.
        var abandoned: String?
    }

    enum Turn: Sendable {
        /// Given to a caller that has not begun yet; `abandoned` says why an unload overtook it.
        case reserved(UInt64, abandoned: String? = nil)
        case loading(Attempt)
    }

    /// Callers waiting for the same request; the leader performs it, the followers get its result.
    struct Group: Sendable {
        var request: Request
        var coalescible: Bool
        var leader: UInt64
        var followers: [UInt64] = []
    }

    enum Phase: String, Sendable {
        case absent, loading, serving, swapping, grace, unavailable
    }
}
