import NIOCore
import NIOHTTP1
import NIOSSL
import NIOTLS
import Synchronization

/// Why a connection closed, as its handler saw it (read from the event loop's callbacks).
final class HTTPConnectionNote: Sendable {
    private let reason = Mutex<String?>(nil)
    var closeReason: String? { reason.withLock { $0 } }
    func record(_ text: String) { reason.withLock { if $0 == nil { $0 = text } } }
}

/// A connection and what is known about why it closed.
struct PooledHTTPConnection: Sendable {
    var channel: any Channel
    var note: HTTPConnectionNote
    var closeReason: String? { note.closeReason }
}

/// What the exchange handler is asked to send, and where the answer goes.
struct HTTPCall: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var reply: EventLoopPromise<KServeHTTPClient.Reply>
}

struct HTTPExchangeError: Error, CustomStringConvertible {
    var reason: String
    var receivedNothing: Bool
    var description: String { reason }
}

/// Sends one request at a time and completes its promise with the whole answer; a connection
/// that closes or fails mid-exchange fails it (exactly once).
final class HTTPExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPCall
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<KServeHTTPClient.Reply>?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    /// Completed when the connection can carry requests: at once, or after the TLS handshake.
    private let ready: EventLoopPromise<Void>
    private let waitsForTLS: Bool
    private let note: HTTPConnectionNote

    init(ready: EventLoopPromise<Void>, waitsForTLS: Bool, note: HTTPConnectionNote) {
        self.ready = ready
        self.waitsForTLS = waitsForTLS
        self.note = note
    }

    func channelActive(context: ChannelHandlerContext) {
        if !waitsForTLS { ready.succeed() }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { ready.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        pending = call.reply
        head = nil
        body = nil
        context.write(wrapOutboundOut(.head(call.head)), promise: nil)
        if let body = call.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead):
            head = responseHead
        case .body(var part):
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            guard let promise = pending, let head else { return }
            pending = nil
            promise.succeed(KServeHTTPClient.Reply(status: Int(head.status.code), headers: head.headers, body: body ?? ByteBuffer()))
            self.head = nil
            body = nil
        }
    }

    private func fail(_ reason: String) {
        note.record(reason)
        guard let promise = pending else { return }
        pending = nil
        promise.fail(HTTPExchangeError(reason: reason, receivedNothing: head == nil))
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready.fail(HTTPExchangeError(reason: "connection closed", receivedNothing: true))
        fail("connection closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ready.fail(error)
        if let tls = error as? NIOSSLError, case .uncleanShutdown = tls {
            fail("the server ended the TLS session abruptly (uncleanShutdown; does it require a client certificate?)")
        } else {
            fail("\(error)")
        }
        context.close(promise: nil)
    }
}
