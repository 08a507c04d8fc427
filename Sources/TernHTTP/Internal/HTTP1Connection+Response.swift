import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime
import TernTLS

/// Writing answers: the response head and body, error answers, and closing after the last one.
extension HTTP1Connection {
    func reject(_ status: HTTPResponseStatus, _ message: String, version: HTTPVersion, context: ChannelHandlerContext) {
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
    func write(
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
}
