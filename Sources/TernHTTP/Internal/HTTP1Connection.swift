import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime
import TernTLS

/// One HTTP/1.1 server connection, parsed and written by hand. SwiftNIO's HTTP/1 pipeline
/// (llhttp decoder, pipelining handler, response encoder, error handler) cost about a quarter of
/// the server's CPU per small inference request; this handler does the same job in one pass.
///
/// Requests are answered strictly in order: while one waits for its answer, the bytes of the next
/// stay buffered (pipelining). Bodies come with Content-Length or chunked transfer coding;
/// `Expect: 100-continue` is answered. Malformed input gets a 400 (431 for an oversized head,
/// 413 for an oversized body, 501 for an unknown transfer coding) and the connection is closed.
///
/// Hostile input is bounded: header bytes are checked before they reach `HTTPHeaders` (whose
/// preconditions would trap), a connection stops reading while its answers wait to be written or
/// computed (backpressure: a client that pipelines requests and never reads the answers holds at
/// most `maxBufferedRequestBytes` plus the channel's write buffer), and the head, body and idle
/// timeouts of `ConnectionLimits` close connections that stall.
final class HTTP1Connection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maxHeadSize = 64 << 10
    static let maxHeaderCount = 256

    private let responder: any HTTPResponder
    let maxBodySize: Int
    let limits: ConnectionLimits
    /// Whether this connection holds a place in `limits.gate`.
    var admitted = false
    /// A read the channel asked for while the connection was paused.
    private var readHeld = false
    /// The timer that closes a stalled connection, and what it waits for.
    var timer: (kind: TimerKind, task: Scheduled<Void>)?
    enum TimerKind { case idle, head, body, stalled }
    /// Bytes of the pending head already scanned for its end (a head arriving in small pieces is
    /// scanned once, not once per piece).
    private var headScanned = 0
    /// Bytes received and not yet parsed.
    var pending: ByteBuffer?
    /// The body of the request being read.
    var body = ByteBuffer()
    /// Where the connection is in its request cycle; changed only by the transitions below.
    var state = State.awaitingHead
    /// The server is shutting down: answer what has arrived, then close.
    var draining = false
    /// The last answer's write, which a drain lets finish before it closes.
    var lastWrite: EventLoopFuture<Void>?

    /// One enum for the connection's progress, as swift-nio's `HTTPServerPipelineHandler` keeps
    /// it. `pending` (bytes not parsed yet) and `draining` are data beside it, not states.
    enum State {
        /// Waiting for a request head; `pending` may hold its first bytes.
        case awaitingHead
        /// A head has arrived; its body is being read.
        case readingBody(Head)
        /// A request is being answered off the event loop; the next waits in `pending`.
        case answering
        /// Nothing more is read or answered: the connection closes once its last answer is written.
        case closing
    }

    var isClosing: Bool {
        if case .closing = state { return true }
        return false
    }

    var isAnswering: Bool {
        if case .answering = state { return true }
        return false
    }

    /// The head whose body is being read.
    var currentHead: Head? {
        if case .readingBody(let head) = state { return head }
        return nil
    }

    struct Head {
        var method: HTTPMethod
        var target: String
        var version: HTTPVersion
        var headers: HTTPHeaders
        var keepAlive: Bool
        var contentLength: Int
        var chunked: Bool
        /// Chunked decoding: bytes left in the current chunk (nil: a size line comes next).
        var chunkLeft: Int? = nil
    }

    enum ParseError: Error {
        case bad(HTTPResponseStatus, String)
    }

    init(responder: any HTTPResponder, maxBodySize: Int, limits: ConnectionLimits) {
        self.responder = responder
        self.maxBodySize = maxBodySize
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context: context)
        context.fireChannelActive()
    }

    /// Takes a place in the connection gate, or answers 503 and closes when every place is held.
    private func admit(context: ChannelHandlerContext) {
        guard !admitted, !isClosing else { return }
        guard limits.gate.enter() else {
            state = .closing
            var body = ByteBuffer()
            body.writeString("{\"error\":\"the server holds its limit of \(limits.gate.limit) connections; try again later\"}")
            write(HTTPReply(status: .serviceUnavailable, headers: [("Content-Type", "application/json"), ("Retry-After", "1")], body: body),
                  keepAlive: false, version: .http1_1, context: context, closeWithin: .seconds(2))
            return
        }
        admitted = true
        updateTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    private func release() {
        timer?.task.cancel()
        timer = nil
        if admitted {
            admitted = false
            limits.gate.leave()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !isClosing else { return }
        if pending == nil || pending!.readableBytes == 0 {
            pending = bytes
        } else {
            pending!.writeBuffer(&bytes)
        }
        if currentHead != nil { timer?.task.cancel(); timer = nil }  // body bytes arrived: the body timeout starts again
        process(context: context)
        updateTimer(context: context)
    }

    /// A drained shutdown (`ChannelShouldQuiesceEvent`): an idle connection closes now; a busy one
    /// answers the requests it has read, the last with `Connection: close`, then closes.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        draining = true
        if case .awaitingHead = state, (pending?.readableBytes ?? 0) == 0 {
            state = .closing
            timer?.task.cancel()
            timer = nil
            // An answer a slow reader has not taken yet is still delivered.
            if let lastWrite { lastWrite.whenComplete { _ in context.close(promise: nil) } } else { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .closing
        pending = nil
        release()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state = .closing
        context.close(promise: nil)
    }

    /// Whether reading must wait: an answer is being computed or cannot be written yet, and
    /// enough of the next requests is buffered already.
    private func paused(_ context: ChannelHandlerContext) -> Bool {
        guard !isClosing else { return false }
        let buffered = pending?.readableBytes ?? 0
        if !context.channel.isWritable { return true }
        return isAnswering && buffered >= limits.maxBufferedRequestBytes
    }

    func read(context: ChannelHandlerContext) {
        if paused(context) {
            readHeld = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            process(context: context)
            resumeReading(context: context)
        }
        updateTimer(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func resumeReading(context: ChannelHandlerContext) {
        if readHeld, !paused(context) {
            readHeld = false
            context.read()
        }
    }

    /// Parses and answers as many complete requests as the buffer holds.
    private func process(context: ChannelHandlerContext) {
        while !isAnswering, !isClosing, context.channel.isWritable, var buffer = pending, buffer.readableBytes > 0 || currentHead != nil {
            do {
                if currentHead == nil {
                    if let refusal = Self.foreignProtocol(buffer) {
                        pending = nil
                        return reject(.badRequest, refusal, version: .http1_1, context: context)
                    }
                    guard let head = try Self.parseHead(&buffer, scanned: &headScanned) else {
                        pending = buffer
                        return
                    }
                    if head.contentLength > maxBodySize {
                        pending = nil
                        return reject(.payloadTooLarge, "request body larger than the limit of \(maxBodySize) bytes", version: head.version, context: context)
                    }
                    if let expect = head.headers.first(name: "Expect"), expect.lowercased() == "100-continue" {
                        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
                    }
                    state = .readingBody(head)
                    body = ByteBuffer()
                }
                let complete = try readBody(&buffer)
                pending = buffer
                if body.readableBytes > maxBodySize {
                    pending = nil
                    return reject(.payloadTooLarge, "request body larger than the limit of \(maxBodySize) bytes", version: currentHead!.version, context: context)
                }
                guard complete, let head = currentHead else { return }
                state = .awaitingHead
                dispatch(head, context: context)
            } catch ParseError.bad(let status, let message) {
                pending = nil
                return reject(status, message, version: currentHead?.version ?? .http1_1, context: context)
            } catch {
                pending = nil
                return reject(.badRequest, "\(error)", version: .http1_1, context: context)
            }
        }
        if let buffer = pending, buffer.readableBytes == 0 { pending = nil }
    }

    /// "address" or "address, certificate NAME"; worked out once per connection.
    private var peerText: String?
    private func peer(_ context: ChannelHandlerContext) -> String {
        if let peerText { return peerText }
        var text = context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown address"
        if let name = ServerTLS.peerName(context.pipeline.syncOperations) { text += ", certificate CN=\(name)" }
        peerText = text
        return text
    }

    private func dispatch(_ head: Head, context: ChannelHandlerContext) {
        // A complete request restarts the clocks: the next head or idle period gets its own.
        timer?.task.cancel()
        timer = nil
        let request = HTTPRequestData(method: head.method, path: head.target, headers: head.headers, body: body, peer: peer(context))
        body = ByteBuffer()
        let reply: EventLoopFuture<HTTPReply>
        switch responder.answer(request) {
        case .now(let now):
            return write(now, keepAlive: head.keepAlive, version: head.version, context: context)
        case .later(let work):
            reply = context.eventLoop.makeFutureWithTask { await work() }
        case .callback(let start):
            let promise = context.eventLoop.makePromise(of: HTTPReply.self)
            if let early = HTTPAnswer.run(start, later: { promise.succeed($0) }) {
                // The engine ran the request inline, before `start` returned: written now.
                promise.succeed(early)
                return write(early, keepAlive: head.keepAlive, version: head.version, context: context)
            }
            reply = promise.futureResult
        }
        state = .answering
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        reply.whenSuccess { reply in
            let (handler, context) = loopBound.value
            guard handler.isAnswering else { return }  // closed meanwhile
            handler.state = .awaitingHead
            handler.write(reply, keepAlive: head.keepAlive, version: head.version, context: context)
            handler.process(context: context)
            handler.resumeReading(context: context)
            handler.updateTimer(context: context)
        }
    }
}
