import Foundation
import TernCore

/// A gRPC service that a program embedding Tern serves on the KServe gRPC port next to
/// `inference.GRPCInferenceService` (the experiments service). Unary methods only: `handle` gets
/// the method name and the serialized request message and returns the serialized response; it
/// runs off the event loop. A `TernError` becomes the call's status (NOT_FOUND, INVALID_ARGUMENT,
/// ...); throw `TernError(.unimplemented, ...)` for a method the service does not have.
public struct GRPCExtensionService: Sendable {
    /// The fully qualified service name, e.g. `tern.experiments.v1.ExperimentService`.
    public let name: String
    public let handle: @Sendable (_ method: String, _ message: Data) async throws(TernError) -> Data

    public init(name: String, handle: @escaping @Sendable (_ method: String, _ message: Data) async throws(TernError) -> Data) {
        self.name = name
        self.handle = handle
    }
}
