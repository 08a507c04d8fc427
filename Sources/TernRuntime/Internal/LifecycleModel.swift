import Foundation
import TernCore

/// What the lifecycle state machine holds for one set of loaded versions: the engine's
/// `LoadedModel`, or a plain value in tests.
protocol LifecycleModel: Sendable {
    /// The versions that loaded, ascending.
    var versions: [Int64] { get }
}
