import Foundation
import ServiceLifecycle
import TernCore
import TernRuntime

/// Edge-cloud hybrid serving as a server pattern: the `remote` and `hybrid` backends for the
/// engine, and the service that runs the remote models' gRPC connections.
public struct HybridPattern: ServerPattern {
    /// Forwards a model to another KServe server.
    public let remote: RemoteBackend
    /// Routes between a local and a remote model.
    public let hybrid: HybridBackend

    /// The pattern with a fresh remote backend (and its connection service) and hybrid backend.
    public init(remote: RemoteBackend = RemoteBackend(), hybrid: HybridBackend = HybridBackend()) {
        self.remote = remote
        self.hybrid = hybrid
    }

    /// `hybrid`.
    public var name: String { "hybrid" }
    /// The backends the engine needs for remote and hybrid models (before it is built).
    public var backends: [any Backend] { [remote, hybrid] }
    /// The remote models' gRPC connections.
    public var services: [any Service] { [remote.connections] }
}
