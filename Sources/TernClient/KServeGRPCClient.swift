import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle
import SwiftProtobuf
import TernCore

/// Tern's one KServe v2 client over gRPC (plaintext or TLS), on grpc-swift 2.
///
/// Calls from any task share one HTTP/2 connection, which grpc-swift re-establishes when it
/// drops. The connection runs while `run()` runs: as a `Service` in a `ServiceGroup` (the hybrid
/// remote backend), or scoped with `KServeGRPCClient.with(...)` (the CLI, tests). Nothing starts
/// in the initializer. Failures arrive as `TernError`s with the server's verdict kept (invalid
/// argument, not found, permission denied) and "unavailable" for anything it could not answer.
///
/// For load generation there is also a blocking mode (`blockingCaller`): unary calls written
/// by hand on a plain socket, see `KServeGRPCClient.BlockingCaller`.
public final class KServeGRPCClient: Service, Sendable {
    /// Largest message sent or received by default: the gRPC frontend's default limit too.
    public static let defaultMaxMessageSize = 256 << 20

    /// The server's host name or address.
    public let host: String
    /// The server's port.
    public let port: Int
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let service: Inference_GRPCInferenceService.Client<HTTP2ClientTransport.Posix>
    private let metadata: Metadata
    private let maxMessageSize: Int
    private let timeout: Duration?

    /// A client for `host:port`. `security`: `.plaintext` or `.tls(...)` (trust roots, client
    /// certificate, verification); `headers` go with every call as metadata (e.g.
    /// `authorization`); `timeout` limits each call (none when nil). Connects once `run()` runs.
    public init(
        host: String, port: Int, security: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext, headers: [(String, String)] = [],
        maxMessageSize: Int = KServeGRPCClient.defaultMaxMessageSize, timeout: Duration? = nil
    ) throws(TernError) {
        self.host = host
        self.port = port
        self.maxMessageSize = maxMessageSize
        self.timeout = timeout
        let name = host == "localhost" ? "127.0.0.1" : host
        let isAddress = name.split(separator: ".").count == 4 && name.split(separator: ".").allSatisfy { UInt8($0) != nil }
        let target: any ResolvableTarget = isAddress ? .ipv4(address: name, port: port) : .dns(host: name, port: port)
        do {
            let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: Self.transportConfig)
            client = GRPCClient(transport: transport)
        } catch {
            throw .invalidArgument("cannot set up a gRPC connection to \(host):\(port): \(error)")
        }
        service = Inference_GRPCInferenceService.Client(wrapping: client)
        var metadata = Metadata()
        for (name, value) in headers { metadata.addString(value, forKey: name.lowercased()) }
        self.metadata = metadata
    }

    /// Runs the connection until `close()` or the service group's graceful shutdown; calls in
    /// flight then finish.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await client.runConnections()
        } onGracefulShutdown: {
            self.client.beginGracefulShutdown()
        }
    }

    /// Stops taking calls; calls in flight finish and `run()` returns.
    public func close() { client.beginGracefulShutdown() }

    /// Connects to `host:port`, runs `body` with the client, then closes the connection.
    public static func with<T: Sendable>(
        host: String, port: Int, security: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext, headers: [(String, String)] = [],
        maxMessageSize: Int = KServeGRPCClient.defaultMaxMessageSize, timeout: Duration? = nil,
        _ body: (KServeGRPCClient) async throws -> T
    ) async throws -> T {
        let client = try KServeGRPCClient(host: host, port: port, security: security, headers: headers, maxMessageSize: maxMessageSize, timeout: timeout)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            defer { client.close() }
            return try await body(client)
        }
    }

    /// The HTTP/2 settings Tern's gRPC clients use: large frames and windows for tensors, and no
    /// flush coalescing (see GRPCFrontend: it delays every response at low load).
    static var transportConfig: HTTP2ClientTransport.Posix.Config {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.http2.maxFrameSize = 1 << 20
        config.http2.targetWindowSize = 16 << 20
        config.connection.flushCoalescing = nil
        return config
    }

    private func options(_ timeout: Duration?) -> CallOptions {
        var options = CallOptions.defaults
        options.maxResponseMessageBytes = maxMessageSize
        options.maxRequestMessageBytes = maxMessageSize
        options.timeout = timeout ?? self.timeout
        return options
    }

    /// Runs `call`, turning what grpc-swift throws into a `TernError`.
    private func calling<T>(_ call: () async throws -> T) async throws(TernError) -> T {
        do {
            return try await call()
        } catch {
            throw Self.ternError(error)
        }
    }

    // MARK: Calls

    /// Runs one inference; tensors travel in raw_input_contents / raw_output_contents.
    public func infer(_ request: InferenceRequest, timeout: Duration? = nil) async throws(TernError) -> InferenceResponse {
        let message = KServeGRPCCodec.message(request)
        let reply = try await calling { try await service.modelInfer(message, metadata: metadata, options: options(timeout)) }
        do {
            return try KServeGRPCCodec.response(reply)
        } catch {
            throw .unavailable("unreadable response from \(host):\(port): \(error)")
        }
    }

    /// The ModelInferRequest message for `request`, serialized (for clients that frame it themselves).
    /// Inputs named in `sharedMemoryInputs` are sent as their place in a registered region.
    public static func serializedInferRequest(
        _ request: InferenceRequest, sharedMemoryInputs: [String: SharedMemoryReference] = [:]
    ) throws -> [UInt8] {
        try KServeGRPCCodec.message(request, sharedMemoryInputs: sharedMemoryInputs).serializedBytes()
    }

    /// A model's inputs and outputs, from its metadata.
    public func signature(model: String, version: Int64? = nil, timeout: Duration? = nil) async throws(TernError) -> ModelSignature {
        let message = Inference_ModelMetadataRequest.with {
            $0.name = model
            $0.version = version.map(String.init) ?? ""
        }
        let reply = try await calling { try await service.modelMetadata(message, metadata: metadata, options: options(timeout)) }
        func specs(_ tensors: [Inference_ModelMetadataResponse.TensorMetadata]) throws(TernError) -> [TensorSpec] {
            try tensors.map { tensor throws(TernError) in
                guard let type = DataType(protocolName: tensor.datatype) else {
                    throw .unavailable("model '\(model)' at \(host):\(port): unknown datatype \(tensor.datatype) in its metadata")
                }
                return TensorSpec(name: tensor.name, dataType: type, shape: tensor.shape)
            }
        }
        return ModelSignature(inputs: try specs(reply.inputs), outputs: try specs(reply.outputs))
    }

    /// A model's `max_batch_size`, from its configuration.
    public func maxBatchSize(model: String) async throws(TernError) -> Int {
        let reply = try await calling { try await service.modelConfig(.with { $0.name = model }, metadata: metadata, options: options(nil)) }
        return Int(reply.config.maxBatchSize)
    }

    /// Registers a POSIX shared-memory object with the server (system shared-memory extension).
    public func registerSystemSharedMemory(name: String, key: String, offset: UInt64 = 0, byteSize: UInt64) async throws(TernError) {
        let message = Inference_SystemSharedMemoryRegisterRequest.with {
            $0.name = name; $0.key = key; $0.offset = offset; $0.byteSize = byteSize
        }
        _ = try await calling { try await service.systemSharedMemoryRegister(message, metadata: metadata, options: options(nil)) }
    }

    /// Unregisters a region (every region when `name` is empty).
    public func unregisterSystemSharedMemory(name: String) async throws(TernError) {
        _ = try await calling {
            try await service.systemSharedMemoryUnregister(.with { $0.name = name }, metadata: metadata, options: options(nil))
        }
    }

    // MARK: Errors

    /// gRPC status → Tern error: the server's own verdict on the request keeps its meaning
    /// (invalid argument, not found, permission denied, internal); what it could not answer —
    /// a connection that cannot be made, UNAVAILABLE, a deadline — is "unavailable", the one
    /// kind worth another try.
    public static func ternError(_ error: any Error) -> TernError {
        if let error = error as? TernError { return error }
        guard let rpc = error as? RPCError else { return .unavailable("\(error)") }
        if rpc.code == .unavailable, let range = rpc.message.range(of: "connection to ") {
            // grpc-swift: "Could not establish a connection to [ipv4]127.0.0.1:8001."
            let address = rpc.message[range.upperBound...].trimmingCharacters(in: CharacterSet(charactersIn: ". "))
                .replacingOccurrences(of: "[ipv4]", with: "").replacingOccurrences(of: "[ipv6]", with: "")
            let cause = rpc.cause.map { " (\(Self.reason($0)))" } ?? ""
            return .unavailable("cannot connect to \(address)\(cause)")
        }
        // The cause says what the message does not (e.g. which TLS check failed).
        let text = rpc.message + (rpc.cause.map { " (\(Self.reason($0)))" } ?? "")
        switch rpc.code {
        case .invalidArgument, .outOfRange: return .invalidArgument(text)
        case .notFound: return .notFound(text)
        case .alreadyExists: return TernError(.alreadyExists, text)
        case .failedPrecondition: return TernError(.failedPrecondition, text)
        case .permissionDenied: return .permissionDenied(text)
        case .unimplemented: return TernError(.unimplemented, text)
        case .deadlineExceeded: return .unavailable(text + " (timed out)")
        case .unavailable, .cancelled, .aborted: return .unavailable(text + " (gRPC \(rpc.code))")
        case .unauthenticated: return .permissionDenied(text + " (unauthenticated, check the credentials)")
        // The server's own failure: another try would most likely fail the same way.
        default: return .internalError(text + " (gRPC \(rpc.code))")
        }
    }

    static func reason(_ error: any Error) -> String { KServeHTTPClient.reason(error) }

    // MARK: Blocking mode

    /// A blocking caller that repeats one unary call of `method` (the full path, e.g.
    /// `/inference.GRPCInferenceService/ModelInfer`) with the serialized `message` on its own
    /// plaintext connection (see `BlockingCaller`).
    public func blockingCaller(method: String, message: [UInt8]) throws -> BlockingCaller {
        try BlockingCaller(host: host, port: port, method: method, message: message)
    }
}
