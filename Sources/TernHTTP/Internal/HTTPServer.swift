import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A request as Tern's HTTP handlers see it: method, path, query, headers and the whole body.
struct HTTPRequestData: Sendable {
    var method: HTTPMethod
    var path: String
    var headers: HTTPHeaders
    var body: ByteBuffer
}

/// A complete response.
struct HTTPReply: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body = ByteBuffer()
}

/// What a responder makes of a request: the reply, computed on the calling thread, or the work
/// that must wait for something (it runs off the event loop).
enum HTTPAnswer: Sendable {
    case now(HTTPReply)
    case later(@Sendable () async -> HTTPReply)
}

/// Answers requests: synchronously where it can (then the event loop answers with no thread hop),
/// otherwise asynchronously.
protocol HTTPResponder: Sendable {
    func answer(_ request: HTTPRequestData) -> HTTPAnswer
}

/// An HTTP/1.1 server on SwiftNIO channel handlers. Hummingbird's async request path cost about
/// 70 µs per request on a 2-core edge box, more than the model for small models; here a request
/// whose answer is ready (health, metadata, a fast model) is answered on the event loop that read it.
final class HTTPServer: Service, Sendable {
    let host: String
    let port: Int
    let maxBodySize: Int
    let responder: any HTTPResponder
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    init(host: String, port: Int, maxBodySize: Int, responder: any HTTPResponder, logger: Logger,
         onRunning: @escaping @Sendable (Int) async -> Void) {
        self.host = host
        self.port = port
        self.maxBodySize = maxBodySize
        self.responder = responder
        self.logger = logger
        self.onRunning = onRunning
    }

    func run() async throws {
        let responder = self.responder
        let maxBodySize = self.maxBodySize
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(responder: responder, maxBodySize: maxBodySize))
                }
            }
            .bind(host: host, port: port).get()
        logger.debug("HTTP server listening", metadata: ["address": .string("\(channel.localAddress.map { "\($0)" } ?? "")")])
        await onRunning(channel.localAddress?.port ?? port)
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Collects one request at a time (the pipeline's pipelining helper queues the next) and writes
/// its reply.
private final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: any HTTPResponder
    private let maxBodySize: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false

    init(responder: any HTTPResponder, maxBodySize: Int) {
        self.responder = responder
        self.maxBodySize = maxBodySize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = nil
            self.tooLarge = false
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > maxBodySize { tooLarge = true }
        case .body(var chunk):
            guard !tooLarge else { return }
            if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
            if (body?.readableBytes ?? 0) > maxBodySize { tooLarge = true; body = nil }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            if tooLarge {
                let reply = HTTPReply(status: .payloadTooLarge, headers: [("Content-Type", "application/json")],
                                      body: ByteBuffer(string: "{\"error\":\"request body larger than the limit of \(maxBodySize) bytes\"}"))
                write(reply, keepAlive: false, version: head.version, context: context)
                return
            }
            let request = HTTPRequestData(method: head.method, path: head.uri, headers: head.headers, body: body ?? ByteBuffer())
            body = nil
            let work: @Sendable () async -> HTTPReply
            switch responder.answer(request) {
            case .now(let reply):
                write(reply, keepAlive: keepAlive, version: head.version, context: context)
                return
            case .later(let later):
                work = later
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let version = head.version
            context.eventLoop.makeFutureWithTask { await work() }.whenSuccess { reply in
                let (handler, context) = loopBound.value
                handler.write(reply, keepAlive: keepAlive, version: version, context: context)
            }
        }
    }

    private func write(_ reply: HTTPReply, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders(reply.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(reply.body.readableBytes))
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: reply.status, headers: headers))), promise: nil)
        if reply.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(reply.body))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}
