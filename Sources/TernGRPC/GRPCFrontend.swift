import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceLifecycle
import TernRuntime

/// Builds the gRPC server Tern serves (a `Service` for the caller's ServiceGroup when wrapped in
/// `GRPCServerService`).
public enum GRPCFrontend {
    /// Default limit on one request message: large enough for a batch of camera frames.
    public static let defaultMaxMessageSize = 256 << 20

    public static func server(
        engine: InferenceServer, host: String, port: Int, maxMessageSize: Int = defaultMaxMessageSize
    ) -> GRPCServer<HTTP2ServerTransport.Posix> {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = maxMessageSize
        // Flush coalescing batches writes for busy servers but holds each response back by up to
        // its delay; at low concurrency (the edge case) that delay dominated the RPC latency.
        config.connection.flushCoalescing = nil
        // A 64 KiB window and 16 KiB frames turn one camera frame into dozens of frames and
        // WINDOW_UPDATE round trips.
        config.http2.targetWindowSize = 16 << 20
        config.http2.maxFrameSize = 1 << 20
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: .plaintext, config: config)
        return GRPCServer(transport: transport, services: [KServeGRPCService(server: engine).registrable])
    }
}

/// Runs a gRPC server as a ServiceLifecycle `Service`: serves until cancelled or asked to shut
/// down gracefully, then lets running RPCs finish.
public struct GRPCServerService: Service {
    public let server: GRPCServer<HTTP2ServerTransport.Posix>

    public init(server: GRPCServer<HTTP2ServerTransport.Posix>) { self.server = server }

    /// The bound address once listening (useful with port 0).
    public var listeningPort: Int? {
        get async { try? await server.listeningAddress?.ipv4?.port }
    }

    public func run() async throws {
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await server.serve()
        } onCancelOrGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}
