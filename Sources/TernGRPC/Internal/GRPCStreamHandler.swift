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

/// One RPC: collects the request messages of an HTTP/2 stream and writes the reply.
final class GRPCStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let dispatcher: KServeGRPCDispatcher
    private let maxMessageSize: Int
    private let load: ConnectionLoad
    private var counted = false
    private var method: String?
    /// The extension service and method of a call outside the KServe service.
    private var extensionCall: (GRPCExtensionService, String)?
    private var forwarded: [(String, String)] = []
    private var buffer = ByteBuffer()
    private var unaryMessage: ByteBuffer?
    private var streaming = false
    private var sentHeaders = false
    private var finished = false
    /// For streams: replies are written in request order.
    private var tail: EventLoopFuture<Void>?
    /// Stream messages received and not yet answered; past `maxQueuedMessages` the stream stops
    /// reading, so HTTP/2 flow control holds the client back instead of memory growing.
    private var queued = 0
    private var readingPaused = false
    static let maxQueuedMessages = 16
    private let limits: ConnectionLimits
    /// The client ended its side of the stream (END_STREAM), and whether that has been handled.
    private var requestEnded = false
    private var endHandled = false
    /// Closes a call whose request stops arriving: restarted by each frame until END_STREAM
    /// (the body timeout for unary calls, the idle timeout between messages of a stream).
    private var requestDeadline: Scheduled<Void>?
    /// Who the call is from, for the lifecycle history.
    private var by = ""
    /// The stream was ended by a drained shutdown rather than by the client.
    private var quiesced = false

    /// The connection's peer: "address" or "address, certificate CN=NAME" (mutual TLS).
    static func peer(_ context: ChannelHandlerContext) -> String {
        guard let connection = context.channel.parent else { return "unknown address" }
        var text = connection.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown address"
        if let name = ServerTLS.peerName(connection.pipeline.syncOperations) { text += ", certificate CN=\(name)" }
        return text
    }

    init(dispatcher: KServeGRPCDispatcher, maxMessageSize: Int, limits: ConnectionLimits, load: ConnectionLoad) {
        self.dispatcher = dispatcher
        self.maxMessageSize = maxMessageSize
        self.limits = limits
        self.load = load
    }

    func handlerAdded(context: ChannelHandlerContext) {
        load.activeCalls += 1
        counted = true
        armRequestDeadline(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        requestDeadline?.cancel()
        requestDeadline = nil
        load.removeStream(ObjectIdentifier(self))
        uncount()
    }

    /// A drained shutdown: a streaming call answers every message it has read, then ends with
    /// UNAVAILABLE, so the client knows later messages were not taken and can resend them to
    /// another server. A client that already ended its side finishes as usual.
    private func quiesce(context: ChannelHandlerContext) {
        guard !finished, !requestEnded else { return }
        quiesced = true
        requestEnded = true
        requestDeadline?.cancel()
        requestDeadline = nil
        endIfComplete(context: context)
    }

    private func armRequestDeadline(context: ChannelHandlerContext) {
        requestDeadline?.cancel()
        requestDeadline = nil
        guard !requestEnded, !finished else { return }
        let timeout = streaming ? limits.idleTimeout : limits.bodyTimeout
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        requestDeadline = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            let (handler, context) = loopBound.value
            handler.requestDeadline = nil
            guard !handler.requestEnded, !handler.finished else { return }
            // Trailers end the call; the call no longer counts as active, so a client that
            // leaves the stream open lets the connection's idle timeout close it.
            handler.fail(GRPCStatus(code: .deadlineExceeded, message: "the call's request stopped arriving for \(timeout)"), context: context)
        }
    }

    /// Ends the request side once END_STREAM has come and every complete message is taken.
    private func endIfComplete(context: ChannelHandlerContext) {
        guard requestEnded, !endHandled, !finished else { return }
        if streaming, queued >= Self.maxQueuedMessages, buffer.readableBytes >= 5 { return }  // messages still waiting to be parsed
        endHandled = true
        endOfRequest(context: context)
    }

    private func uncount() {
        if counted {
            counted = false
            load.activeCalls -= 1
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if method == nil {
                let path = headers.headers.first(name: ":path") ?? ""
                let inference = path.hasPrefix(KServeGRPCDispatcher.servicePrefix)
                extensionCall = inference ? nil : dispatcher.extensionMethod(path)
                guard inference || extensionCall != nil else {
                    return fail(GRPCStatus(code: .unimplemented, message: "Method not found: \(path)"), context: context)
                }
                guard (headers.headers.first(name: "content-type") ?? "").hasPrefix("application/grpc") else {
                    return fail(GRPCStatus(code: .invalidArgument, message: "content-type must be application/grpc"), context: context)
                }
                let name = extensionCall?.1 ?? String(path.dropFirst(KServeGRPCDispatcher.servicePrefix.count))
                if let refusal = dispatcher.refusal(method: name, extension: extensionCall?.0, headers: headers.headers) {
                    return fail(refusal, context: context)
                }
                by = dispatcher.actor(method: name, extension: extensionCall?.0, peer: Self.peer(context))
                if let (_, name) = extensionCall {
                    method = name
                } else {
                    let name = String(path.dropFirst(KServeGRPCDispatcher.servicePrefix.count))
                    method = name
                    forwarded = dispatcher.forwardedHeaders(headers.headers)
                    streaming = name == KServeGRPCDispatcher.streamMethod
                    if streaming {
                        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                        load.addStream(ObjectIdentifier(self)) {
                            let (handler, context) = bound.value
                            handler.quiesce(context: context)
                        }
                    }
                }
            }
            if headers.endStream { requestEnded = true }
            armRequestDeadline(context: context)
            endIfComplete(context: context)
        case .data(let frame):
            guard !quiesced else { return }  // sent after the drain began: not read
            if case .byteBuffer(var bytes) = frame.data { buffer.writeBuffer(&bytes) }
            if frame.endStream { requestEnded = true }
            armRequestDeadline(context: context)
            readMessages(context: context)
            endIfComplete(context: context)
        default:
            break
        }
    }

    private func readMessages(context: ChannelHandlerContext) {
        // A stream with its queue full leaves further messages in the buffer until it drains.
        while !finished, buffer.readableBytes >= 5, !(streaming && queued >= Self.maxQueuedMessages) {
            let start = buffer.readerIndex
            let compressed = buffer.getInteger(at: start, as: UInt8.self)!
            let length = Int(buffer.getInteger(at: start + 1, as: UInt32.self)!)
            guard compressed == 0 else {
                return fail(GRPCStatus(code: .unimplemented, message: "compressed messages are not supported"), context: context)
            }
            guard length <= maxMessageSize else {
                return fail(GRPCStatus(code: .resourceExhausted, message: "message of \(length) bytes exceeds the limit of \(maxMessageSize)"), context: context)
            }
            guard buffer.readableBytes >= 5 + length else { return }
            buffer.moveReaderIndex(forwardBy: 5)
            let message = buffer.readSlice(length: length)!
            if streaming {
                enqueueStreamMessage(message, context: context)
            } else if unaryMessage == nil {
                unaryMessage = message
            } else {
                return fail(GRPCStatus(code: .invalidArgument, message: "a unary call carried more than one message"), context: context)
            }
        }
        buffer.discardReadBytes()
    }

    private func enqueueStreamMessage(_ message: ByteBuffer, context: ChannelHandlerContext) {
        let dispatcher = self.dispatcher
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let previous = tail ?? loop.makeSucceededVoidFuture()
        queued += 1
        if queued >= Self.maxQueuedMessages, !readingPaused {
            readingPaused = true
            _ = context.channel.setOption(ChannelOptions.autoRead, value: false)
        }
        tail = previous.flatMap {
            loop.makeFutureWithTask { await dispatcher.streamInfer(message: message) }
        }.map { result in
            let (handler, context) = bound.value
            handler.queued -= 1
            if handler.readingPaused, handler.queued <= Self.maxQueuedMessages / 2 {
                handler.readingPaused = false
                handler.readMessages(context: context)
                handler.endIfComplete(context: context)
                if !handler.readingPaused {
                    _ = context.channel.setOption(ChannelOptions.autoRead, value: true)
                    context.read()
                }
            }
            switch result {
            case .success(let bytes): handler.writeMessage(bytes, context: context)
            case .failure(let status): handler.fail(status, context: context)
            }
        }
    }

    private func endOfRequest(context: ChannelHandlerContext) {
        guard let method, !finished else { return }
        if streaming {
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            (tail ?? context.eventLoop.makeSucceededVoidFuture()).whenComplete { _ in
                let (handler, context) = bound.value
                handler.finish(handler.quiesced
                    ? GRPCStatus(code: .unavailable, message: "the server is shutting down: messages sent after this point were not read")
                    : GRPCStatus.ok, context: context)
            }
            return
        }
        guard let message = unaryMessage else {
            return fail(GRPCStatus(code: .internal, message: "the request carried no message"), context: context)
        }
        let outcome: EventLoopFuture<Result<[UInt8], GRPCStatus>>
        // With other calls waiting on this connection, its event loop keeps reading them while the
        // model runs on its instance's thread; a lone call runs here, with no thread hop.
        let answer = extensionCall.map { dispatcher.answer(extension: $0.0, method: method, message: message, by: by) }
            ?? dispatcher.answer(method: method, message: message, inline: load.activeCalls <= 1, forwarded: forwarded, by: by)
        switch answer {
        case .now(let result): return reply(result, context: context)
        case .later(let work): outcome = context.eventLoop.makeFutureWithTask { await work() }
        case .callback(let start):
            let promise = context.eventLoop.makePromise(of: Result<[UInt8], GRPCStatus>.self)
            if let early = GRPCAnswer.run(start, later: { promise.succeed($0) }) {
                // The engine ran the call inline, before `start` returned: replied now.
                promise.succeed(early)
                return reply(early, context: context)
            }
            outcome = promise.futureResult
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        outcome.whenSuccess { result in
            let (handler, context) = bound.value
            handler.reply(result, context: context)
        }
    }

    private func reply(_ result: Result<[UInt8], GRPCStatus>, context: ChannelHandlerContext) {
        switch result {
        case .success(let bytes):
            // The message and the trailers leave in one flush (one write on the socket).
            writeMessage(bytes, context: context, flush: false)
            finish(GRPCStatus.ok, context: context)
        case .failure(let status):
            fail(status, context: context)
        }
    }

    private func writeHeadersIfNeeded(context: ChannelHandlerContext) {
        guard !sentHeaders else { return }
        sentHeaders = true
        let headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
        context.write(wrapOutboundOut(.headers(.init(headers: headers, endStream: false))), promise: nil)
    }

    private func writeMessage(_ bytes: [UInt8], context: ChannelHandlerContext, flush: Bool = true) {
        guard !finished else { return }
        writeHeadersIfNeeded(context: context)
        var framed = context.channel.allocator.buffer(capacity: bytes.count + 5)
        framed.writeInteger(UInt8(0))
        framed.writeInteger(UInt32(bytes.count))
        framed.writeBytes(bytes)
        let frame = wrapOutboundOut(.data(.init(data: .byteBuffer(framed), endStream: false)))
        if flush { context.writeAndFlush(frame, promise: nil) } else { context.write(frame, promise: nil) }
    }

    /// Ends the call with `status`: trailers after a reply, or a trailers-only response.
    private func finish(_ status: GRPCStatus, context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        uncount()
        var trailers: HPACKHeaders = sentHeaders ? [:] : [":status": "200", "content-type": "application/grpc"]
        trailers.add(name: "grpc-status", value: String(status.code.rawValue))
        if !status.message.isEmpty { trailers.add(name: "grpc-message", value: Self.percentEncoded(status.message)) }
        let sent = context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))))
        if quiesced {
            // The client may never end its side of a stream the drain ended: reset it once the
            // trailers are out, so the connection can close.
            let channel = context.channel
            sent.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func fail(_ status: GRPCStatus, context: ChannelHandlerContext) {
        finish(status, context: context)
    }

    /// grpc-message is percent-encoded outside printable ASCII (and '%').
    static func percentEncoded(_ message: String) -> String {
        var out = ""
        for byte in message.utf8 {
            if byte >= 0x20, byte <= 0x7E, byte != UInt8(ascii: "%") {
                out.append(Character(Unicode.Scalar(byte)))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
