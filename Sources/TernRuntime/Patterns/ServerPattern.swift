import Foundation
import ServiceLifecycle
import TernCore

/// What a pattern (experiments, hybrid routing, the device monitor, federated learning, ...)
/// contributes to a server: routes on the HTTP port, services on the gRPC port, JSON pages on
/// the metrics port, backends for the engine, and long-running `Service`s. `tern serve` composes
/// a list of patterns; nothing about a pattern is written into the serve command itself.
///
/// A pattern is made in two steps, because the engine needs the backends before a pattern can
/// hold the engine: `backends` is read before the engine is built, everything else after (see
/// docs/architecture.md, "How to add a pattern"). Every requirement has a default that
/// contributes nothing, so a pattern states only what it adds.
public protocol ServerPattern: Sendable {
    /// A short name for logs, e.g. `experiments`.
    var name: String { get }
    /// Routes it serves under the KServe HTTP API.
    var httpRoutes: [HTTPExtensionRoutes] { get }
    /// gRPC services it serves beside `inference.GRPCInferenceService`.
    var grpcServices: [GRPCExtensionService] { get }
    /// JSON pages it serves on the metrics port.
    var metricsPages: [MetricsPage] { get }
    /// Services the server's `ServiceGroup` runs: they start before the models load and are
    /// shut down after the frontends have drained.
    var services: [any Service] { get }
    /// Called once the start-up models have loaded, before the server reports ready.
    func modelsLoaded() async
}

extension ServerPattern {
    /// None.
    public var httpRoutes: [HTTPExtensionRoutes] { [] }
    /// None.
    public var grpcServices: [GRPCExtensionService] { [] }
    /// None.
    public var metricsPages: [MetricsPage] { [] }
    /// None.
    public var services: [any Service] { [] }
    /// Does nothing.
    public func modelsLoaded() async {}
}

/// A JSON page on the metrics port (e.g. `/device/stats`), guarded by an API group.
public struct MetricsPage: Sendable {
    /// The page's path, e.g. `/device/stats`.
    public var path: String
    /// The API group that guards it (what `--http-restricted-api` names).
    public var group: String
    /// Renders the page's JSON at request time.
    public var render: @Sendable () -> String

    /// A page at `path` in API group `group`, rendered by `render`.
    public init(path: String, group: String, render: @escaping @Sendable () -> String) {
        self.path = path
        self.group = group
        self.render = render
    }
}
