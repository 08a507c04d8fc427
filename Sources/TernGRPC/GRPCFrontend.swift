import Logging
import ServiceLifecycle
import TernRuntime

/// Builds the gRPC server Tern serves: `inference.GRPCInferenceService` on SwiftNIO's HTTP/2.
public enum GRPCFrontend {
    /// Default limit on one request message: large enough for a batch of camera frames.
    public static let defaultMaxMessageSize = 256 << 20

    public static func server(
        engine: InferenceServer, host: String, port: Int, maxMessageSize: Int = defaultMaxMessageSize, logger: Logger
    ) -> GRPCServerService {
        GRPCServerService(
            server: GRPCHTTP2Server(
                host: host, port: port, maxMessageSize: maxMessageSize, dispatcher: KServeGRPCDispatcher(server: engine),
                logger: logger))
    }
}

/// The gRPC server as a ServiceLifecycle `Service`.
public struct GRPCServerService: Service {
    let server: GRPCHTTP2Server

    /// The bound port once listening (useful with port 0); nil if binding failed.
    public var listeningPort: Int? {
        get async { await server.listeningPort }
    }

    public func run() async throws {
        try await server.run()
    }
}
