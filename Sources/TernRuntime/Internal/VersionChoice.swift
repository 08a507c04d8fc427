import Foundation
import TernCore

/// Which versions a load serves.
enum VersionChoice: Sendable, Hashable {
    /// Keep a pin set by promote/rollback; otherwise the version policy.
    case keepPin
    /// Back to the version policy (a plain load request clears pins).
    case policy
    case pin([Int64])
    /// These versions, leaving pins as they are (restoring what served before).
    case exactly([Int64])
}
