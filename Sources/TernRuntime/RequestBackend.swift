import Foundation
import Logging
import TernCore

/// A backend that answers whole requests instead of executing batches on instances: a model that
/// routes to other models (TernHybrid's edge/cloud router). It sees each request with its
/// parameters and may call any model of the engine; the engine still validates the request
/// against the config and keeps the model's statistics and metrics.
public protocol RequestBackend: Backend {
    func makeHandler(config: ModelConfig, modelDirectory: URL, logger: Logger) throws -> any RequestHandler
}

/// Answers the requests of one model version (see `RequestBackend`).
public protocol RequestHandler: Sendable {
    /// The inputs and outputs, as a model file would declare them (auto-complete and checks use it).
    var signature: ModelSignature { get }
    /// Answers `request` (already validated), calling `completion` once, from any thread. The
    /// response's outputs and parameters are passed on as they are.
    func handle(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void)
}

extension RequestBackend {
    /// Always throws: a request-answering backend has no batch instances, so the engine never asks it for one.
    public func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        throw TernError.internalError("\(name) answers whole requests; it has no batch instances")
    }
}

/// Stands in for the instances of a request-answering model: it only carries the signature.
final class HandlerSignature: ModelInstance {
    let signature: ModelSignature
    init(_ signature: ModelSignature) { self.signature = signature }
    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        throw TernError.internalError("a request-answering model has no batch execution")
    }
}
