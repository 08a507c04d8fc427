import Foundation
import TernCore

/// The decisions about a model that outlive a restart: pins from promote and rollback, what a
/// rollback would go back to, the versions last served, and the versions the gates rejected
/// (with a digest of the files they were rejected from).
public struct ModelDecisions: Sendable, Codable, Equatable {
    /// The versions a promote or rollback pinned; nil lets the version policy choose.
    public var pinnedVersions: [Int64]?
    /// The versions a rollback goes back to: those served before the last swap.
    public var rollbackVersions: [Int64]
    /// The versions served last, which a model is restored to when the gates reject a later load.
    public var servedVersions: [Int64]
    /// The versions the gates rejected last (cleared once a load of one of them passes).
    public var rejectedVersions: [Int64]
    /// A digest of the repository files the rejected versions were loaded from ("" when none were).
    public var rejectedFingerprint: String

    /// Decisions with these fields; the defaults are those of a model that has no history.
    public init(
        pinnedVersions: [Int64]? = nil, rollbackVersions: [Int64] = [], servedVersions: [Int64] = [], rejectedVersions: [Int64] = [],
        rejectedFingerprint: String = ""
    ) {
        self.pinnedVersions = pinnedVersions
        self.rollbackVersions = rollbackVersions
        self.servedVersions = servedVersions
        self.rejectedVersions = rejectedVersions
        self.rejectedFingerprint = rejectedFingerprint
    }
}
