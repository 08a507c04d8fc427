import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import TernCore
import TernTraining

/// Flower's coordinator on a gRPC port: `flwr.proto.FlowerService` over HTTP/2, plaintext or TLS,
/// accepting messages up to Flower's 2 GiB - 1. `run` serves until the last round has ended and
/// every client has been told to disconnect, then returns the run's summary.
public struct FLServer: Sendable {
    /// The run's settings (address, TLS, message limit).
    public let settings: FLSettings
    /// The coordinator the connections report to.
    public let coordinator: FLCoordinator
    private let logger: Logger

    /// A server for `coordinator` with `settings`.
    public init(settings: FLSettings, coordinator: FLCoordinator, logger: Logger = Logger(label: "tern.fl")) {
        self.settings = settings
        self.coordinator = coordinator
        self.logger = logger
    }

    /// Serves until the run finishes; `onListening` gets the bound `host:port` (port 0 picks one).
    public func run(onListening: @escaping @Sendable (String) -> Void = { _ in }) async throws -> FLRunSummary {
        let (host, port) = try FLServer.split(address: settings.address)
        let security: HTTP2ServerTransport.Posix.TransportSecurity
        if let certificate = settings.tlsCertificate, let key = settings.tlsPrivateKey {
            security = .tls(certificateChain: [.file(path: certificate, format: .pem)], privateKey: .file(path: key, format: .pem))
        } else {
            security = .plaintext
        }
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = settings.maxMessageBytes
        // Model updates are megabytes: a 64 KiB flow-control window would make every upload wait
        // for window updates (round trips), so the window and frames are sized for bulk transfer.
        config.http2.targetWindowSize = 64 << 20
        config.http2.maxFrameSize = 1 << 20
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: host, port: port), transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: [FlowerService(coordinator: coordinator)])
        return try await withThrowingTaskGroup(of: FLRunSummary?.self) { group in
            group.addTask {
                try await server.serve()
                return nil
            }
            let bound = try await transport.listeningAddress
            let boundText = bound.ipv4.map { "\($0.host):\($0.port)" } ?? "\(bound)"
            logger.info("fl: Flower coordinator listening on \(boundText) (\(settings.tlsCertificate == nil ? "plaintext" : "TLS"))")
            onListening(boundText)
            let coordinator = self.coordinator
            group.addTask { await coordinator.waitUntilFinished() }
            // Whichever ends first: the run (then stop serving) or the server (then the run cannot go on).
            guard let first = try await group.next(), let summary = first else {
                group.cancelAll()
                throw TernError.unavailable("the Flower server on \(boundText) stopped before the run ended")
            }
            // Give clients a moment to read their ReconnectIns and close, then stop.
            try? await Task.sleep(for: .milliseconds(300))
            server.beginGracefulShutdown()
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                return nil
            }
            _ = try await group.next()
            group.cancelAll()
            return summary
        }
    }

    /// `HOST:PORT` (or `[HOST]:PORT`) split; `0.0.0.0` listens everywhere.
    static func split(address: String) throws(TernError) -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw .invalidArgument("address '\(address)' must be HOST:PORT")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty || host == "::" { host = "0.0.0.0" }
        return (host, port)
    }
}
