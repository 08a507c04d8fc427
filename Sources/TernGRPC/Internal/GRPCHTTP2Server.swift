import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import ServiceLifecycle
import Synchronization
import TernCore
import TernRuntime
import TernTLS
#if canImport(Glibc)
import Glibc
#endif

/// The KServe gRPC service served straight from SwiftNIO's HTTP/2 stream channels. grpc-swift's
/// server cost about 250 µs per unary call at concurrency 1 on a 2-core edge box (its async
/// plumbing hops threads several times per RPC); here a call whose answer is ready — metadata,
/// health, inference of a fast model — is answered on the event loop that read it. Implements the
/// gRPC-over-HTTP/2 wire format: length-prefixed messages, `grpc-status`/`grpc-message` trailers,
/// trailers-only errors. No compression.
final class GRPCHTTP2Server: Service, Sendable {
    let host: String
    let port: Int
    let maxMessageSize: Int
    let limits: ConnectionLimits
    let tls: ServerTLS?
    let dispatcher: KServeGRPCDispatcher
    let logger: Logger
    private let bound = Mutex<(port: Int?, waiters: [CheckedContinuation<Int?, Never>], finished: Bool)>((nil, [], false))

    init(
        host: String, port: Int, maxMessageSize: Int, limits: ConnectionLimits, tls: ServerTLS? = nil, dispatcher: KServeGRPCDispatcher,
        drainGrace: Duration = .seconds(30), logger: Logger
    ) {
        self.drainGrace = drainGrace
        self.host = host
        self.port = port
        self.maxMessageSize = maxMessageSize
        self.limits = limits
        self.tls = tls
        self.dispatcher = dispatcher
        self.logger = logger
    }

    /// The bound port once listening (nil if binding failed).
    var listeningPort: Int? {
        get async {
            await withCheckedContinuation { continuation in
                let ready: Int?? = bound.withLock { state in
                    if state.port != nil || state.finished { return .some(state.port) }
                    state.waiters.append(continuation)
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    private func announce(_ port: Int?) {
        let waiters = bound.withLock { state -> [CheckedContinuation<Int?, Never>] in
            state.port = port
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    private let listener = Mutex<(any Channel)?>(nil)
    /// The open connections, for a drained shutdown.
    let connections = ChannelSet()
    /// Longest a draining connection's calls may take after its GOAWAY (`--exit-timeout-secs`).
    let drainGrace: Duration

    /// Opens the listening socket (once) and returns the bound port; throws naming the address
    /// when it is taken.
    @discardableResult
    func bind() async throws(TernError) -> Int {
        if let channel = listener.withLock({ $0 }) { return channel.localAddress?.port ?? port }
        let dispatcher = self.dispatcher
        let maxMessageSize = self.maxMessageSize
        let limits = self.limits
        let tls = self.tls
        let connections = self.connections
        let grace = TimeAmount.nanoseconds(Int64(drainGrace.nanoseconds))
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let load = ConnectionLoad()
                        // The connection gate and the idle timeout come first: a refused
                        // connection is closed before any HTTP/2 state is built for it.
                        try channel.pipeline.syncOperations.addHandler(GRPCConnectionGuard(limits: limits, load: load))
                        try tls?.addHandler(to: channel.pipeline.syncOperations)
                        var connection = NIOHTTP2Handler.ConnectionConfiguration()
                        connection.initialSettings = [
                            HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.maxConcurrentStreams),
                            HTTP2Setting(parameter: .maxHeaderListSize, value: 64 << 10),
                            HTTP2Setting(parameter: .maxFrameSize, value: 1 << 20),
                            HTTP2Setting(parameter: .initialWindowSize, value: 16 << 20),
                        ]
                        connection.targetWindowSize = 16 << 20
                        var stream = NIOHTTP2Handler.StreamConfiguration()
                        stream.targetWindowSize = 16 << 20
                        // Graceful close on ChannelShouldQuiesceEvent (a drained shutdown): GOAWAY,
                        // a PING to learn the last stream the client opened, a second GOAWAY
                        // naming it, and the close once those streams are done (it learns of
                        // streams through the stream delegate). Idle time is GRPCConnectionGuard's;
                        // no keep-alive pings.
                        let manager = NIOHTTP2ServerConnectionManagementHandler(
                            eventLoop: channel.eventLoop, configuration: .init(maxIdleTime: nil, maxAge: nil, maxGraceTime: grace, keepalive: nil))
                        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                            mode: .server, connectionConfiguration: connection, streamConfiguration: stream,
                            streamDelegate: manager.http2StreamDelegate
                        ) { streamChannel in
                            streamChannel.eventLoop.makeCompletedFuture {
                                try streamChannel.pipeline.syncOperations.addHandler(
                                    GRPCStreamHandler(dispatcher: dispatcher, maxMessageSize: maxMessageSize, limits: limits, load: load))
                            }
                        }
                        try channel.pipeline.syncOperations.addHandler(manager)
                        connections.insert(channel)
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            announce(nil)
            throw TernError.listenFailed("gRPC", host: host, port: port, reason: (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)")
        }
        listener.withLock { $0 = channel }
        announce(channel.localAddress?.port)
        return channel.localAddress?.port ?? port
    }

    func run() async throws {
        try await bind()
        guard let channel = listener.withLock({ $0 }) else { return }
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}
