import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import TernCore

/// A long-lived KServe v2 gRPC connection (plaintext or TLS) to another server, for models that
/// forward their requests there (`remote` models). Calls may come from many threads at once; they
/// share one HTTP/2 connection, which grpc-swift re-establishes when it drops.
public final class KServeGRPCConnection: Sendable {
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let service: Inference_GRPCInferenceService.Client<HTTP2ClientTransport.Posix>
    private let runner: Task<Void, Never>
    private let metadata: Metadata

    /// - Parameters:
    ///   - security: `.plaintext` or `.tls(...)` (grpc-swift's settings: trust roots, client
    ///     certificate, verification).
    ///   - headers: sent as metadata with every call (e.g. `authorization`).
    public init(
        host: String, port: Int, security: HTTP2ClientTransport.Posix.TransportSecurity, headers: [(String, String)] = []) throws {
        let isAddress = host.split(separator: ".").count == 4 && host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        let target: any ResolvableTarget = isAddress ? .ipv4(address: host, port: port) : .dns(host: host, port: port)
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: KServeGRPCClient.transportConfig)
        let client = GRPCClient(transport: transport)
        self.client = client
        service = Inference_GRPCInferenceService.Client(wrapping: client)
        var metadata = Metadata()
        for (name, value) in headers { metadata.addString(value, forKey: name.lowercased()) }
        self.metadata = metadata
        runner = Task { try? await client.runConnections() }
    }

    deinit {
        client.beginGracefulShutdown()
    }

    /// Stops accepting calls; calls in flight finish.
    public func close() { client.beginGracefulShutdown() }

    private func options(_ timeout: Duration?) -> CallOptions {
        KServeGRPCClient.options(KServeGRPCClient.defaultMaxMessageSize, timeout: timeout)
    }

    /// One inference; tensors travel as raw contents.
    public func infer(_ request: InferenceRequest, timeout: Duration?) async throws(TernError) -> InferenceResponse {
        let message = KServeGRPCCodec.message(request)
        let reply: Inference_ModelInferResponse
        do {
            reply = try await service.modelInfer(message, metadata: metadata, options: options(timeout))
        } catch {
            throw Self.ternError(error, model: request.modelName)
        }
        do {
            return try KServeGRPCCodec.response(reply)
        } catch {
            throw .unavailable("remote model '\(request.modelName)': unreadable response: \(error)")
        }
    }

    /// A model's inputs and outputs, from its metadata.
    public func signature(model: String, version: Int64?, timeout: Duration?) async throws(TernError) -> ModelSignature {
        let message = Inference_ModelMetadataRequest.with {
            $0.name = model
            $0.version = version.map(String.init) ?? ""
        }
        let reply: Inference_ModelMetadataResponse
        do {
            reply = try await service.modelMetadata(message, metadata: metadata, options: options(timeout))
        } catch {
            throw Self.ternError(error, model: model)
        }
        func specs(_ tensors: [Inference_ModelMetadataResponse.TensorMetadata]) throws(TernError) -> [TensorSpec] {
            try tensors.map { tensor throws(TernError) in
                guard let type = DataType(protocolName: tensor.datatype) else {
                    throw .unavailable("remote model '\(model)': unknown datatype \(tensor.datatype) in its metadata")
                }
                return TensorSpec(name: tensor.name, dataType: type, shape: tensor.shape)
            }
        }
        return ModelSignature(inputs: try specs(reply.inputs), outputs: try specs(reply.outputs))
    }

    /// gRPC status → Tern error: the remote's own verdict on the request keeps its meaning
    /// (invalid argument, not found); anything the remote could not answer is "unavailable".
    static func ternError(_ error: any Error, model: String) -> TernError {
        guard let rpc = error as? RPCError else {
            return .unavailable("remote model '\(model)': \(error)")
        }
        // The cause says what the message does not (e.g. which TLS check failed).
        let text = "remote model '\(model)': \(rpc.message)" + (rpc.cause.map { " (\($0))" } ?? "")
        switch rpc.code {
        case .invalidArgument, .outOfRange: return .invalidArgument(text)
        case .notFound: return .notFound(text)
        case .deadlineExceeded: return .unavailable(text + " (timed out)")
        case .unauthenticated, .permissionDenied: return .unavailable(text + " (\(rpc.code), check the credentials)")
        default: return .unavailable(text + " (gRPC \(rpc.code))")
        }
    }
}
