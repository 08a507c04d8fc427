import Foundation
import ServiceLifecycle
import TernRuntime

/// A/B experiments, shadows and canaries as a server pattern: the experiments API on the HTTP
/// port (`/v2/experiments`) and the gRPC port (`tern.experiments.v1.ExperimentService`), the
/// manager's recorder and shadow runner as a service, and the saved experiments resumed once the
/// models have loaded.
public struct ExperimentsPattern: ServerPattern {
    /// The manager the routes and services act on.
    public let manager: ExperimentManager

    /// The pattern of `manager`.
    public init(manager: ExperimentManager) {
        self.manager = manager
    }

    /// `experiments`.
    public var name: String { "experiments" }
    /// `/v2/experiments` and its sub-resources.
    public var httpRoutes: [HTTPExtensionRoutes] { [ExperimentRoutes.routes(manager)] }
    /// `tern.experiments.v1.ExperimentService`.
    public var grpcServices: [GRPCExtensionService] { [ExperimentGRPC.service(manager)] }
    /// The manager (its recorder and shadow runner).
    public var services: [any Service] { [manager] }

    /// Resumes the experiments saved in the store.
    public func modelsLoaded() async {
        manager.loadAll()
    }
}
