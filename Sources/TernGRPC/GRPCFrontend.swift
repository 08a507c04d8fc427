import Foundation
import Logging
import ServiceLifecycle
import TernClient
import TernCore
import TernRuntime
import TernTLS

/// Builds the gRPC server Tern serves: `inference.GRPCInferenceService` on SwiftNIO's HTTP/2.
public enum GRPCFrontend {
    /// Default limit on one request message: large enough for a batch of camera frames.
    public static let defaultMaxMessageSize = KServeGRPCClient.defaultMaxMessageSize

    /// `tls` serves gRPC over TLS (ALPN h2; mutual when its files say so). `limits` bound connections, streams and idle time; `access` names the restricted API groups
    /// and their keys (Triton's `--grpc-restricted-protocol`). Metadata keys whose whole name matches `headerForwardPattern` (a regular expression, as
    /// Triton's `--grpc-header-forward-pattern`) reach the model as request parameters.
    /// `extensions` are further services served on the same port (their names must differ from
    /// the KServe service's).
    public static func server(
        engine: InferenceServer, host: String, port: Int, maxMessageSize: Int = defaultMaxMessageSize, headerForwardPattern: String? = nil,
        extensions: [GRPCExtensionService] = [], limits: ConnectionLimits = ConnectionLimits(), access: APIAccessPolicy = .open, tls: ServerTLS? = nil,
        drainGrace: Duration = .seconds(30), logger: Logger
    ) throws -> GRPCServerService {
        var dispatcher = KServeGRPCDispatcher(server: engine, access: access)
        dispatcher.maxMessageSize = maxMessageSize
        for service in extensions {
            guard "/\(service.name)/" != KServeGRPCDispatcher.servicePrefix, dispatcher.extensions["/\(service.name)/"] == nil else {
                throw TernError.invalidArgument("gRPC service '\(service.name)' is served already")
            }
            dispatcher.extensions["/\(service.name)/"] = service
        }
        if let headerForwardPattern {
            do {
                dispatcher.headerForwardPattern = try NSRegularExpression(pattern: headerForwardPattern, options: [.caseInsensitive])
            } catch {
                throw TernError.invalidArgument("header forward pattern '\(headerForwardPattern)': \(error)")
            }
        }
        return GRPCServerService(server: GRPCHTTP2Server(
            host: host, port: port, maxMessageSize: maxMessageSize, limits: limits, tls: tls, dispatcher: dispatcher, drainGrace: drainGrace, logger: logger))
    }
}

/// The gRPC server as a ServiceLifecycle `Service`. Its listener closes on graceful shutdown;
/// `drainConnections` then lets the calls in progress finish (see `DrainableFrontend`).
public struct GRPCServerService: Service, DrainableFrontend {
    let server: GRPCHTTP2Server

    /// What this listener serves, for the shutdown's log: always "gRPC".
    public var role: String { "gRPC" }

    /// Every connection gets a GOAWAY, finishes the calls it has started and closes.
    public func drainConnections(timeout: Duration) async -> Int { await server.connections.drain(timeout: timeout) }

    /// The bound port once listening (useful with port 0); nil if binding failed.
    public var listeningPort: Int? {
        get async { await server.listeningPort }
    }

    /// Opens the listening socket now and returns the bound port; throws naming the address
    /// when it is taken.
    @discardableResult
    public func bind() async throws(TernError) -> Int { try await server.bind() }

    /// Opens the listening socket unless `bind` has, and serves until graceful shutdown closes the
    /// listener.
    public func run() async throws {
        try await server.run()
    }
}
