import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import TernCore

/// One HTTP/1.1 exchange's answer.
package struct KServeHTTPReply: Sendable {
    package var status: Int
    package var headers: HTTPHeaders
    package var body: ByteBuffer
}

/// Why one attempt failed, and whether another attempt may succeed.
package struct KServeAttemptFailure: Error {
    package var error: TernError
    package var retryable: Bool
    /// The failure happened on a kept-alive connection before anything was read: the server most
    /// likely closed it while idle, so a new connection is tried at once.
    package var staleConnection = false

    package init(error: TernError, retryable: Bool, staleConnection: Bool = false) {
        self.error = error
        self.retryable = retryable
        self.staleConnection = staleConnection
    }
}

/// KServe v2 over HTTP/1.1 (plain or TLS) on SwiftNIO, with kept-alive connections. Called from
/// model instances' own threads, which wait for the answer.
package final class KServeHTTPTransport: Sendable {
    package let host: String
    package let port: Int
    package let timeout: Duration
    package let headers: [(String, String)]
    private let tls: NIOSSLContext?
    private let serverName: String?
    /// Whether a client certificate is configured (if not, a TLS server that closes the connection
    /// right after the handshake most likely wanted one).
    private let presentsCertificate: Bool
    private let idle = Mutex<[RemoteConnection]>([])
    private let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    package init(host: String, port: Int, timeout: Duration, headers: [(String, String)], tls: TLSConfiguration?) throws(TernError) {
        self.host = host
        self.port = port
        self.timeout = timeout
        self.headers = headers
        presentsCertificate = tls?.certificateChain.isEmpty == false
        if let tls {
            do {
                self.tls = try NIOSSLContext(configuration: tls)
            } catch {
                throw .invalidArgument("remote TLS settings: \(error)")
            }
        } else {
            self.tls = nil
        }
        // SNI and hostname checks need a name; an address literal has none.
        serverName = host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" } ? nil : host
    }

    deinit {
        for connection in idle.withLock({ $0 }) { connection.channel.close(promise: nil) }
    }

    /// One exchange on a kept-alive connection (or a new one).
    package func exchange(method: HTTPMethod, path: String, body: ByteBuffer?, extraHeaders: [(String, String)]) throws(KServeAttemptFailure) -> KServeHTTPReply {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        for (name, value) in headers + extraHeaders { head.headers.add(name: name, value: value) }

        let reused = idle.withLock { connections -> RemoteConnection? in
            while let connection = connections.popLast() {
                if connection.channel.isActive { return connection }
            }
            return nil
        }
        let connection: RemoteConnection
        if let reused {
            connection = reused
        } else {
            connection = try connect()
        }
        let channel = connection.channel
        let promise = channel.eventLoop.makePromise(of: KServeHTTPReply.self)
        let timedOut = Atomic(false)
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            timedOut.store(true, ordering: .relaxed)
            promise.fail(RemoteHTTPExchangeError(reason: "timed out", receivedNothing: false))
            channel.close(promise: nil)
        }
        // A write that never reaches the handler (the connection closed first, e.g. a server that
        // refused the client's certificate after the handshake) fails the exchange too, with the
        // reason the connection closed if one is known; a promise completed twice keeps its first outcome.
        channel.writeAndFlush(RemoteHTTPCall(head: head, body: body, reply: promise)).whenFailure { error in
            promise.fail(RemoteHTTPExchangeError(reason: connection.closeReason ?? "\(error)", receivedNothing: true))
        }
        let reply: KServeHTTPReply
        do {
            reply = try promise.futureResult.wait()
            timer.cancel()
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            if timedOut.load(ordering: .relaxed) {
                throw KServeAttemptFailure(error: .unavailable("remote \(host):\(port) timed out after \(timeout)"), retryable: true)
            }
            let receivedNothing = (error as? RemoteHTTPExchangeError)?.receivedNothing == true
            var reason = "remote \(host):\(port): \(error)"
            if reused == nil, receivedNothing, tls != nil, !presentsCertificate {
                // TLS 1.3 servers check a client certificate after the client considers the
                // handshake done: a refusal shows up as a connection closed before any answer.
                reason += " (the server closed the new TLS connection before answering; if it requires a client certificate, set tern.remote.tls_cert_file and tern.remote.tls_key_file)"
            }
            throw KServeAttemptFailure(error: .unavailable(reason), retryable: true, staleConnection: reused != nil && receivedNothing)
        }
        if reply.headers["connection"].contains(where: { $0.lowercased() == "close" }) {
            channel.close(promise: nil)
        } else {
            idle.withLock { $0.append(connection) }
        }
        return reply
    }

    /// A new connection, TLS handshake done (so that a refused certificate is reported as such).
    private func connect() throws(KServeAttemptFailure) -> RemoteConnection {
        let tls = self.tls
        let serverName = self.serverName
        let loop = group.next()
        let ready = loop.makePromise(of: Void.self)
        let note = RemoteConnectionNote()
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(Int64(timeout.nanoseconds)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(RemoteHTTPExchangeHandler(ready: ready, waitsForTLS: tls != nil, note: note))
                }
            }
        let channel: any Channel
        do {
            channel = try bootstrap.connect(host: host, port: port).wait()
        } catch {
            ready.fail(error)
            throw KServeAttemptFailure(error: .unavailable("remote \(host):\(port) is unreachable: \(error)"), retryable: true)
        }
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            ready.fail(RemoteHTTPExchangeError(reason: "the TLS handshake timed out", receivedNothing: true))
        }
        do {
            try ready.futureResult.wait()
            timer.cancel()
            return RemoteConnection(channel: channel, note: note)
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            throw KServeAttemptFailure(error: .unavailable("remote \(host):\(port): TLS handshake failed: \(error)"), retryable: true)
        }
    }
}

/// Why a connection closed, as its handler saw it (read from the event loop's callbacks).
final class RemoteConnectionNote: Sendable {
    private let reason = Mutex<String?>(nil)
    var closeReason: String? { reason.withLock { $0 } }
    func record(_ text: String) { reason.withLock { if $0 == nil { $0 = text } } }
}

/// A connection and what is known about why it closed.
struct RemoteConnection: Sendable {
    var channel: any Channel
    var note: RemoteConnectionNote
    var closeReason: String? { note.closeReason }
}

/// What the exchange handler is asked to send, and where the answer goes.
struct RemoteHTTPCall: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var reply: EventLoopPromise<KServeHTTPReply>
}

struct RemoteHTTPExchangeError: Error, CustomStringConvertible {
    var reason: String
    var receivedNothing: Bool
    var description: String { reason }
}

/// Sends one request at a time and completes its promise with the whole answer; a connection
/// that closes or fails mid-exchange fails it (exactly once).
final class RemoteHTTPExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = RemoteHTTPCall
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<KServeHTTPReply>?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    /// Completed when the connection can carry requests: at once, or after the TLS handshake.
    private let ready: EventLoopPromise<Void>
    private let waitsForTLS: Bool
    private let note: RemoteConnectionNote

    init(ready: EventLoopPromise<Void>, waitsForTLS: Bool, note: RemoteConnectionNote) {
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
            promise.succeed(KServeHTTPReply(status: Int(head.status.code), headers: head.headers, body: body ?? ByteBuffer()))
            self.head = nil
            body = nil
        }
    }

    private func fail(_ reason: String) {
        note.record(reason)
        guard let promise = pending else { return }
        pending = nil
        promise.fail(RemoteHTTPExchangeError(reason: reason, receivedNothing: head == nil))
    }

    func channelInactive(context: ChannelHandlerContext) {
        ready.fail(RemoteHTTPExchangeError(reason: "connection closed", receivedNothing: true))
        fail("connection closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ready.fail(error)
        if let tls = error as? NIOSSLError, case .uncleanShutdown = tls {
            fail("the server ended the TLS session abruptly (uncleanShutdown; does it require a client certificate? see tern.remote.tls_cert_file)")
        } else {
            fail("\(error)")
        }
        context.close(promise: nil)
    }
}
