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
    private let maxBodySize: Int
    private let limits: ConnectionLimits
    /// Whether this connection holds a place in `limits.gate`.
    private var admitted = false
    /// A read the channel asked for while the connection was paused.
    private var readHeld = false
    /// The timer that closes a stalled connection, and what it waits for.
    private var timer: (kind: TimerKind, task: Scheduled<Void>)?
    private enum TimerKind { case idle, head, body, stalled }
    /// Bytes of the pending head already scanned for its end (a head arriving in small pieces is
    /// scanned once, not once per piece).
    private var headScanned = 0
    /// Bytes received and not yet parsed.
    private var pending: ByteBuffer?
    /// The body of the request being read.
    private var body = ByteBuffer()
    /// Where the connection is in its request cycle; changed only by the transitions below.
    private var state = State.awaitingHead
    /// The server is shutting down: answer what has arrived, then close.
    private var draining = false
    /// The last answer's write, which a drain lets finish before it closes.
    private var lastWrite: EventLoopFuture<Void>?

    /// One enum for the connection's progress, as swift-nio's `HTTPServerPipelineHandler` keeps
    /// it. `pending` (bytes not parsed yet) and `draining` are data beside it, not states.
    private enum State {
        /// Waiting for a request head; `pending` may hold its first bytes.
        case awaitingHead
        /// A head has arrived; its body is being read.
        case readingBody(Head)
        /// A request is being answered off the event loop; the next waits in `pending`.
        case answering
        /// Nothing more is read or answered: the connection closes once its last answer is written.
        case closing
    }

    private var isClosing: Bool {
        if case .closing = state { return true }
        return false
    }

    private var isAnswering: Bool {
        if case .answering = state { return true }
        return false
    }

    /// The head whose body is being read.
    private var currentHead: Head? {
        if case .readingBody(let head) = state { return head }
        return nil
    }

    private struct Head {
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

    private enum ParseError: Error {
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

    /// Arms the timer the connection's state calls for: the idle timeout between requests, the
    /// head timeout once a head has begun (not restarted by later bytes of it), the body timeout
    /// while a body is read (restarted by each piece) and while answers wait for a client that
    /// does not read them (restarted whenever it reads enough); none while an answer is computed.
    private func updateTimer(context: ChannelHandlerContext) {
        guard admitted, !isClosing else { return }
        let wanted: TimerKind?
        if !context.channel.isWritable {
            wanted = .stalled  // the client does not read its answers
        } else if isAnswering {
            wanted = nil
        } else if currentHead != nil {
            wanted = .body
        } else if let pending, pending.readableBytes > 0 {
            wanted = .head
        } else {
            wanted = .idle
        }
        if let timer, timer.kind == wanted { return }
        timer?.task.cancel()
        timer = nil
        guard let wanted else { return }
        let delay: Duration
        switch wanted {
        case .idle: delay = limits.idleTimeout
        case .head: delay = limits.headerTimeout
        case .body, .stalled: delay = limits.bodyTimeout
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay.nanoseconds))) {
            let (handler, context) = loopBound.value
            handler.timedOut(wanted, context: context)
        }
        timer = (wanted, task)
    }

    private func timedOut(_ kind: TimerKind, context: ChannelHandlerContext) {
        guard timer?.kind == kind, !isClosing else { return }
        timer = nil
        switch kind {
        case .idle, .stalled:
            state = .closing
            context.close(promise: nil)
        case .head:
            pending = nil
            reject(.requestTimeout, "the request head did not arrive within \(limits.headerTimeout)", version: .http1_1, context: context)
        case .body:
            pending = nil
            reject(.requestTimeout, "no request body bytes arrived for \(limits.bodyTimeout)", version: currentHead?.version ?? .http1_1, context: context)
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

    /// Where a body that arrives in pieces is gathered: its whole length at once (no regrowth
    /// copies), placed so that the binary tensor data after an `Inference-Header-Content-Length`
    /// JSON header starts 64-byte aligned — the tensors then point into this buffer and ONNX
    /// Runtime reads them where they are, rather than copying misaligned elements first.
    /// (Reserving the declared length up front costs no memory before bytes arrive: an allocation
    /// that large is mapped lazily, so resident memory grows with what is actually received.)
    private static func bodyBuffer(for head: Head) -> ByteBuffer {
        let alignment = 64
        var buffer = ByteBufferAllocator().buffer(capacity: head.contentLength + alignment)
        // Only a placement hint: clamped to the body, so no header value can overflow the arithmetic.
        let jsonLength = min(max(head.headers.first(name: "Inference-Header-Content-Length").flatMap { Int($0) } ?? 0, 0), head.contentLength)
        let start = buffer.withUnsafeMutableWritableBytes { Int(bitPattern: $0.baseAddress) }
        let padding = (alignment - (start + max(jsonLength, 0)) % alignment) % alignment
        buffer.moveWriterIndex(forwardBy: padding)
        buffer.moveReaderIndex(forwardBy: padding)
        return buffer
    }

    /// Reads body bytes of the head being read from `buffer`; true once the body is complete.
    private func readBody(_ buffer: inout ByteBuffer) throws -> Bool {
        guard var head = currentHead else { return true }
        defer { state = .readingBody(head) }
        if !head.chunked {
            let wanted = head.contentLength - body.readableBytes
            if wanted == 0 { return true }
            let available = min(wanted, buffer.readableBytes)
            if body.readableBytes == 0, available == wanted {
                body = buffer.readSlice(length: available)!  // the whole body in one piece: no copy
            } else {
                if body.readableBytes == 0 { body = Self.bodyBuffer(for: head) }
                var slice = buffer.readSlice(length: available)!
                body.writeBuffer(&slice)
            }
            return body.readableBytes == head.contentLength
        }
        while true {
            if let left = head.chunkLeft {
                if left > 0 {
                    let take = min(left, buffer.readableBytes)
                    if take == 0 { return false }
                    var slice = buffer.readSlice(length: take)!
                    body.writeBuffer(&slice)
                    head.chunkLeft = left - take
                    if body.readableBytes > maxBodySize { return false }
                    if head.chunkLeft! > 0 { return false }
                }
                // The CRLF after a chunk's data.
                guard buffer.readableBytes >= 2 else { return false }
                guard buffer.readString(length: 2) == "\r\n" else { throw ParseError.bad(.badRequest, "malformed chunked body") }
                head.chunkLeft = nil
            }
            let lineStart = buffer.readerIndex
            guard let line = Self.readLine(&buffer, limit: 1024) else {
                if buffer.readableBytes > 1024 { throw ParseError.bad(.badRequest, "malformed chunk size") }
                return false
            }
            let sizeText = line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: " \t") } ?? ""
            guard let size = Int(sizeText, radix: 16), size >= 0 else { throw ParseError.bad(.badRequest, "malformed chunk size '\(line)'") }
            if size == 0 {
                // Trailer fields, then an empty line.
                var copy = buffer
                while true {
                    if copy.readerIndex - buffer.readerIndex > Self.maxHeadSize {
                        throw ParseError.bad(.requestHeaderFieldsTooLarge, "chunked trailers larger than \(Self.maxHeadSize) bytes")
                    }
                    guard let trailer = Self.readLine(&copy, limit: Self.maxHeadSize) else {
                        if copy.readableBytes > Self.maxHeadSize || copy.readerIndex - buffer.readerIndex + copy.readableBytes > Self.maxHeadSize {
                            throw ParseError.bad(.requestHeaderFieldsTooLarge, "chunked trailers larger than \(Self.maxHeadSize) bytes")
                        }
                        // Incomplete: put the size line back (to where it began) by consuming nothing.
                        buffer.moveReaderIndex(to: lineStart)
                        return false
                    }
                    if trailer.isEmpty { break }
                }
                buffer = copy
                return true
            }
            guard size <= maxBodySize - body.readableBytes else {
                throw ParseError.bad(.payloadTooLarge, "request body larger than the limit of \(maxBodySize) bytes")
            }
            head.chunkLeft = size
        }
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

    private func reject(_ status: HTTPResponseStatus, _ message: String, version: HTTPVersion, context: ChannelHandlerContext) {
        var body = ByteBuffer()
        body.writeString("{\"error\":\"")
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\"": body.writeString("\\\"")
            case "\\": body.writeString("\\\\")
            case _ where scalar.value < 0x20: body.writeString(" ")
            default: body.writeString(String(scalar))
            }
        }
        body.writeString("\"}")
        write(HTTPReply(status: status, headers: [("Content-Type", "application/json")], body: body), keepAlive: false, version: version, context: context)
    }

    /// Writes `reply`. Without keep-alive the connection closes once it is written, or after
    /// `closeWithin` (default: the body timeout) if the client never reads it (or, behind TLS, never
    /// finishes its handshake), so a refused or rejected client cannot keep its descriptor.
    private func write(
        _ reply: HTTPReply, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext, closeWithin: Duration? = nil
    ) {
        // Draining: this is the last answer unless more requests have arrived behind it.
        let keepAlive = keepAlive && !(draining && (pending?.readableBytes ?? 0) == 0)
        let bodyBytes = reply.body.readableBytes
        // Small bodies travel in the head's buffer: one write of one buffer.
        let inline = bodyBytes <= 16 << 10
        var out = context.channel.allocator.buffer(capacity: 128 + reply.headers.count * 48 + (inline ? bodyBytes : 0))
        out.writeStaticString(version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeString(String(reply.status.code))
        out.writeInteger(UInt8(ascii: " "))
        out.writeString(reply.status.reasonPhrase)
        out.writeStaticString("\r\n")
        for (name, value) in reply.headers where !Self.isFraming(name) {
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("Content-Length: ")
        out.writeString(String(bodyBytes))
        out.writeStaticString("\r\n")
        if !keepAlive { out.writeStaticString("Connection: close\r\n") }
        else if version.minor == 0 { out.writeStaticString("Connection: keep-alive\r\n") }
        out.writeStaticString("\r\n")
        let written: EventLoopFuture<Void>
        if inline {
            var copy = reply.body
            out.writeBuffer(&copy)
            written = context.writeAndFlush(wrapOutboundOut(out))
        } else {
            context.write(wrapOutboundOut(out), promise: nil)
            written = context.writeAndFlush(wrapOutboundOut(reply.body))
        }
        lastWrite = written
        if !keepAlive {
            state = .closing
            pending = nil
            timer?.task.cancel()
            timer = nil
            let deadline = closeWithin ?? limits.bodyTimeout
            let forced = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(deadline.nanoseconds))) { context.close(promise: nil) }
            written.whenComplete { _ in
                forced.cancel()
                context.close(promise: nil)
            }
        }
    }

    private static func isFraming(_ name: String) -> Bool {
        name.utf8.count == 14 && name.lowercased() == "content-length" || name.utf8.count == 10 && name.lowercased() == "connection"
    }

    /// One CRLF-terminated line (without the CRLF), consumed from `buffer`; nil when incomplete.
    private static func readLine(_ buffer: inout ByteBuffer, limit: Int) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.prefix(limit + 1).firstIndex(of: 13) else { return nil }
        guard cr + 1 < view.endIndex else { return nil }
        guard view[cr + 1] == 10 else { return nil }
        let line = buffer.getString(at: view.startIndex, length: cr - view.startIndex) ?? ""
        buffer.moveReaderIndex(forwardBy: cr - view.startIndex + 2)
        return line
    }

    /// Why bytes that start a request are not HTTP/1 at all (a TLS handshake, an HTTP/2 preface),
    /// nil when they may be.
    static func foreignProtocol(_ buffer: ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let first = view.first else { return nil }
        if first == 0x16, view.count < 2 || view[view.startIndex + 1] == 0x03 {
            return "a TLS handshake arrived on a plain-HTTP port: use http://, or start the server with TLS on this port (--http-use-ssl)"
        }
        if first == 0x80 || first < 0x09 {
            return "the request does not start with an HTTP method (byte 0x\(String(first, radix: 16)) at offset 0)"
        }
        return nil
    }

    /// Parses a request head from `buffer` (consuming it); nil when it is not complete yet.
    private static func parseHead(_ buffer: inout ByteBuffer, scanned: inout Int) throws -> Head? {
        let view = buffer.readableBytesView
        // Find the blank line that ends the head; a line ended by a bare LF is refused (RFC 9112
        // allows either; accepting both invites request smuggling behind a proxy that differs).
        var end: Int? = nil
        // Resume where the last scan stopped, three bytes back for a CRLFCRLF that straddles pieces.
        var index = view.startIndex + max(0, min(scanned, view.count) - 3)
        let limit = min(view.endIndex, view.startIndex + maxHeadSize)
        while index < limit {
            let byte = view[index]
            if byte == 10, index == view.startIndex || view[index - 1] != 13 {
                throw ParseError.bad(.badRequest, "request head line ends with a bare LF at byte offset \(index - view.startIndex); lines must end with CRLF")
            }
            if byte == 13, index + 3 < view.endIndex, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 {
                end = index
                break
            }
            index += 1
        }
        guard let end else {
            if view.count > maxHeadSize { throw ParseError.bad(.requestHeaderFieldsTooLarge, "request head larger than \(maxHeadSize) bytes") }
            scanned = index - view.startIndex
            return nil
        }
        scanned = 0
        let headLength = end - view.startIndex
        let head = try buffer.withUnsafeReadableBytes { raw in try parseHeadBytes(UnsafeRawBufferPointer(rebasing: raw[0..<headLength])) }
        buffer.moveReaderIndex(forwardBy: headLength + 4)
        return head
    }

    /// The head's bytes (without the final blank line) as a request head. Works on bytes: Swift's
    /// String treats "\r\n" as one Character, which makes splitting by lines slow.
    private static func parseHeadBytes(_ bytes: UnsafeRawBufferPointer) throws -> Head {
        var lines: [Range<Int>] = []
        var start = 0
        var index = 0
        while index < bytes.count {
            if bytes[index] == 13, index + 1 < bytes.count, bytes[index + 1] == 10 {
                lines.append(start..<index)
                index += 2
                start = index
            } else {
                index += 1
            }
        }
        lines.append(start..<bytes.count)
        // Tolerate empty lines before the request line (RFC 9112 §2.2).
        while let first = lines.first, first.isEmpty { lines.removeFirst() }
        guard let requestLine = lines.first else { throw ParseError.bad(.badRequest, "empty request") }
        let spaces = requestLine.filter { bytes[$0] == UInt8(ascii: " ") }
        guard spaces.count == 2, spaces[0] > requestLine.lowerBound, spaces[1] > spaces[0] + 1, spaces[1] + 1 < requestLine.upperBound else {
            throw ParseError.bad(.badRequest, "malformed request line")
        }
        func text(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
        guard (requestLine.lowerBound..<spaces[0]).allSatisfy({ isTokenByte(bytes[$0]) }) else {
            throw ParseError.bad(.badRequest, "malformed method in the request line (byte offset \(requestLine.lowerBound))")
        }
        if let bad = ((spaces[0] + 1)..<spaces[1]).first(where: { bytes[$0] <= 0x20 || bytes[$0] >= 0x7F }) {
            throw ParseError.bad(.badRequest, "request target has a byte 0x\(String(bytes[bad], radix: 16)) that must be percent-encoded (byte offset \(bad))")
        }
        let method = text(requestLine.lowerBound..<spaces[0])
        let target = text((spaces[0] + 1)..<spaces[1])
        let versionText = text((spaces[1] + 1)..<requestLine.upperBound)
        let version: HTTPVersion
        switch versionText {
        case "HTTP/1.1": version = .http1_1
        case "HTTP/1.0": version = .http1_0
        default: throw ParseError.bad(.httpVersionNotSupported, "unsupported HTTP version '\(versionText)'")
        }
        var headers = HTTPHeaders()
        var contentLength: Int? = nil
        var chunked = false
        var connection: String? = nil
        guard lines.count - 1 <= maxHeaderCount else {
            throw ParseError.bad(.requestHeaderFieldsTooLarge, "the request has \(lines.count - 1) header fields; at most \(maxHeaderCount) are accepted")
        }
        for line in lines.dropFirst() {
            guard let colon = line.first(where: { bytes[$0] == UInt8(ascii: ":") }), colon > line.lowerBound else {
                throw ParseError.bad(.badRequest, "malformed header line at byte offset \(line.lowerBound): no 'name:'")
            }
            let nameRange = line.lowerBound..<colon
            // Field names are tokens (RFC 9110 §5.1): no spaces, controls or bytes above 0x7E.
            if let bad = nameRange.first(where: { !isTokenByte(bytes[$0]) }) {
                throw ParseError.bad(.badRequest, "header name has an invalid byte 0x\(String(bytes[bad], radix: 16)) at byte offset \(bad)")
            }
            // Field values: visible bytes, spaces and tabs, and obs-text; no other controls.
            if let bad = ((colon + 1)..<line.upperBound).first(where: { let b = bytes[$0]; return (b < 0x20 && b != 9) || b == 0x7F }) {
                throw ParseError.bad(.badRequest, "header value has a control byte 0x\(String(bytes[bad], radix: 16)) at byte offset \(bad)")
            }
            var valueStart = colon + 1, valueEnd = line.upperBound
            while valueStart < valueEnd, bytes[valueStart] == 32 || bytes[valueStart] == 9 { valueStart += 1 }
            while valueEnd > valueStart, bytes[valueEnd - 1] == 32 || bytes[valueEnd - 1] == 9 { valueEnd -= 1 }
            let name = text(nameRange), value = text(valueStart..<valueEnd)
            headers.add(name: name, value: value)
            if equalsIgnoringCase(bytes, nameRange, "content-length") {
                guard let length = Int(value), length >= 0, contentLength == nil || contentLength == length else {
                    throw ParseError.bad(.badRequest, "invalid Content-Length")
                }
                contentLength = length
            } else if equalsIgnoringCase(bytes, nameRange, "transfer-encoding") {
                guard value.lowercased() == "chunked" else { throw ParseError.bad(.notImplemented, "unsupported Transfer-Encoding '\(value)'") }
                chunked = true
            } else if equalsIgnoringCase(bytes, nameRange, "connection") {
                connection = value.lowercased()
            }
        }
        if chunked, contentLength != nil { throw ParseError.bad(.badRequest, "both Content-Length and Transfer-Encoding") }
        let keepAlive = version == .http1_1 ? connection != "close" : connection == "keep-alive"
        return Head(
            method: HTTPMethod(rawValue: method), target: target, version: version, headers: headers,
            keepAlive: keepAlive, contentLength: contentLength ?? 0, chunked: chunked)
    }

    /// Whether `byte` may appear in a token (method, header name): RFC 9110 §5.6.2's tchar.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }

    /// Whether `bytes[range]` is `lowercase` in any letter case (ASCII).
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count {
            var byte = bytes[range.lowerBound + offset]
            if byte >= 65, byte <= 90 { byte += 32 }
            if byte != lowercase.utf8Start[offset] { return false }
        }
        return true
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var result = self
        while let first = result.first, set.contains(first) { result = result.dropFirst() }
        while let last = result.last, set.contains(last) { result = result.dropLast() }
        return String(result)
    }
}
