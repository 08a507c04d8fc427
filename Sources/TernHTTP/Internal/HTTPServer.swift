import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
import TernCore
import TernRuntime
import TernTLS
#if canImport(Glibc)
import Glibc
#endif

/// A request as Tern's HTTP handlers see it: method, path, query, headers and the whole body.
struct HTTPRequestData: Sendable {
    var method: HTTPMethod
    var path: String
    var headers: HTTPHeaders
    var body: ByteBuffer
    /// The client: its address, and its certificate's name over mutual TLS (for the record of who
    /// changed what).
    var peer: String = ""
}

/// A complete response.
struct HTTPReply: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body = ByteBuffer()
}

/// What a responder makes of a request: the reply, computed on the calling thread, or the work
/// that must wait for something (it runs off the event loop).
typealias HTTPAnswer = Answer<HTTPReply>

/// Answers requests: synchronously where it can (then the event loop answers with no thread hop),
/// otherwise asynchronously.
protocol HTTPResponder: Sendable {
    func answer(_ request: HTTPRequestData) -> HTTPAnswer
}

/// An HTTP/1.1 server on a SwiftNIO channel handler (`HTTP1Connection`). Hummingbird's async
/// request path cost about 70 µs per request on a 2-core edge box, more than the model for small
/// models; here a request whose answer is ready (health, metadata, a fast model) is answered on
/// the event loop that read it.
final class HTTPServer: Service, Sendable {
    let host: String
    let port: Int
    let maxBodySize: Int
    let limits: ConnectionLimits
    /// TLS on this port, when configured.
    let tls: ServerTLS?
    let responder: any HTTPResponder
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void
    /// What the port serves, for messages ("HTTP", "metrics").
    let role: String

    init(role: String = "HTTP", host: String, port: Int, maxBodySize: Int, limits: ConnectionLimits, tls: ServerTLS? = nil, responder: any HTTPResponder, logger: Logger,
         onRunning: @escaping @Sendable (Int) async -> Void) {
        self.role = role
        self.host = host
        self.port = port
        self.maxBodySize = maxBodySize
        self.limits = limits
        self.tls = tls
        self.responder = responder
        self.logger = logger
        self.onRunning = onRunning
    }

    /// The listening channel once `bind` has run.
    private let listener = Mutex<(any Channel)?>(nil)
    /// The open connections, for a drained shutdown.
    let connections = ChannelSet()

    /// Opens the listening socket (once) and returns the bound port; `tern serve` binds every
    /// port before it says "ready", so a port already taken fails the start, named.
    @discardableResult
    func bind() async throws(TernError) -> Int {
        if let channel = listener.withLock({ $0 }) { return channel.localAddress?.port ?? port }
        let channel: any Channel
        do {
            channel = try await bootstrap(responder: responder, maxBodySize: maxBodySize, limits: limits)
                .bind(host: host, port: port).get()
        } catch {
            throw TernError.listenFailed(role, host: host, port: port, reason: (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)")
        }
        listener.withLock { $0 = channel }
        return channel.localAddress?.port ?? port
    }

    func run() async throws {
        try await bind()
        guard let channel = listener.withLock({ $0 }) else { return }
        logger.debug("\(role) server listening", metadata: ["address": .string("\(channel.localAddress.map { "\($0)" } ?? "")")])
        await onRunning(channel.localAddress?.port ?? port)
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }

    private func bootstrap(responder: any HTTPResponder, maxBodySize: Int, limits: ConnectionLimits) -> ServerBootstrap {
        let tls = self.tls
        let connections = self.connections
        return ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try tls?.addHandler(to: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.addHandler(HTTP1Connection(responder: responder, maxBodySize: maxBodySize, limits: limits))
                    connections.insert(channel)
                }
            }
    }
}
