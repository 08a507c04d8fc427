import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
import TernCore
import TernRuntime
@testable import TernHTTP

/// The HTTP/1 connection handler against hostile input, on an embedded channel: bytes that would
/// trap in swift-nio refused, reading paused while answers cannot be written, the head, body and
/// idle timeouts, and the connection gate.
@Suite struct HTTP1ConnectionHardeningTests {
    /// Answers every request 200 with its path as the body.
    struct Echo: HTTPResponder {
        func answer(_ request: HTTPRequestData) -> HTTPAnswer {
            .now(HTTPReply(status: .ok, body: ByteBuffer(string: request.path)))
        }
    }

    /// Counts the reads that reach the channel (the handler holds those it must not pass on).
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    func channel(limits: ConnectionLimits = ConnectionLimits()) throws -> (EmbeddedChannel, ReadCounter) {
        let counter = ReadCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(HTTP1Connection(responder: Echo(), maxBodySize: 1 << 20, limits: limits))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, counter)
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
        return text
    }

    @Test func headerBytesThatWouldTrapInNIOAreRefused() throws {
        for (head, expected) in [
            ("GET /x HTTP/1.1\r\nX\u{FF}: 1\r\n\r\n", "header name has an invalid byte 0xc3"),
            ("GET /x HTTP/1.1\r\nX-A: a\u{01}b\r\n\r\n", "header value has a control byte 0x1"),
            ("G\u{7F}T /x HTTP/1.1\r\n\r\n", "malformed method"),
            ("GET /x\u{01} HTTP/1.1\r\n\r\n", "must be percent-encoded"),
            ("GET /x HTTP/1.1\nHost: a\n\n", "bare LF"),
        ] {
            let (channel, _) = try channel()
            try channel.writeInbound(ByteBuffer(string: head))
            let reply = try written(channel)
            #expect(reply.hasPrefix("HTTP/1.1 400 "), "\(head.debugDescription): \(reply)")
            #expect(reply.contains(expected), "\(head.debugDescription): \(reply)")
            _ = try? channel.finish()
        }
    }

    @Test func tooManyHeaderFieldsAre431() throws {
        let (channel, _) = try channel()
        let fields = (0...HTTP1Connection.maxHeaderCount).map { "X-\($0): 1\r\n" }.joined()
        try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\n\(fields)\r\n"))
        #expect(try written(channel).hasPrefix("HTTP/1.1 431 "))
        _ = try? channel.finish()
    }

    @Test func aTLSHandshakeOnThePlainPortGetsA400() throws {
        let (channel, _) = try channel()
        try channel.writeInbound(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x05]))
        let reply = try written(channel)
        #expect(reply.hasPrefix("HTTP/1.1 400 ") && reply.contains("TLS handshake"))
        _ = try? channel.finish()
    }

    @Test func pipelinedRequestsWaitWhileAnswersCannotBeWritten() throws {
        let (channel, counter) = try channel()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"))
        #expect(try written(channel).isEmpty, "nothing is answered while the socket cannot take it")
        let before = counter.reads
        channel.read()
        #expect(counter.reads == before, "the read is held while unwritable")

        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        let replies = try written(channel)
        #expect(replies.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(replies)")
        #expect(replies.range(of: "/a")!.lowerBound < replies.range(of: "/b")!.lowerBound)
        #expect(counter.reads == before + 1, "the held read goes out once writable")
        _ = try? channel.finish()
    }

    @Test func stalledHeadsAndBodiesTimeOutAndIdleConnectionsClose() throws {
        let limits = ConnectionLimits(headerTimeout: .seconds(1), bodyTimeout: .seconds(2), idleTimeout: .seconds(5))
        do {
            let (channel, _) = try channel(limits: limits)
            try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\nHost:"))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
            #expect(try written(channel).isEmpty)
            try channel.writeInbound(ByteBuffer(string: " a"))  // more bytes of the head do not restart its clock
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
            let reply = try written(channel)
            #expect(reply.hasPrefix("HTTP/1.1 408 ") && reply.contains("did not arrive within"), "\(reply)")
            _ = try? channel.finish()
        }
        do {
            let (channel, _) = try channel(limits: limits)
            try channel.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n12"))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
            try channel.writeInbound(ByteBuffer(string: "34"))  // each piece restarts the body clock
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
            #expect(try written(channel).isEmpty)
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
            let reply = try written(channel)
            #expect(reply.hasPrefix("HTTP/1.1 408 ") && reply.contains("no request body bytes"), "\(reply)")
            _ = try? channel.finish()
        }
        do {
            let (channel, _) = try channel(limits: limits)
            try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\n\r\n"))
            #expect(try written(channel).hasPrefix("HTTP/1.1 200 "))
            channel.embeddedEventLoop.advanceTime(by: .seconds(4))
            #expect(channel.isActive)
            channel.embeddedEventLoop.advanceTime(by: .seconds(2))
            #expect(!channel.isActive, "an idle connection is closed after the idle timeout")
        }
    }

    @Test func theConnectionGateRefusesBeyondItsLimitAndFreesPlaces() throws {
        let limits = ConnectionLimits(maxConnections: 1)
        let (first, _) = try channel(limits: limits)
        #expect(limits.gate.current == 1)
        let (second, _) = try channel(limits: limits)
        let reply = try written(second)
        #expect(reply.hasPrefix("HTTP/1.1 503 ") && reply.contains("limit of 1 connections"), "\(reply)")
        #expect(limits.gate.refused == 1)
        _ = try? second.finish()
        _ = try? first.finish()
        #expect(limits.gate.current == 0)
        let (third, _) = try channel(limits: limits)
        try third.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\n\r\n"))
        #expect(try written(third).hasPrefix("HTTP/1.1 200 "))
        _ = try? third.finish()
    }

    @Test func bodyPlacementHintsAndChunkLinesCannotOverflowOrRewindTooFar() throws {
        do {
            let (channel, _) = try channel()
            try channel.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nContent-Length: 4\r\nInference-Header-Content-Length: 9223372036854775807\r\n\r\nab"))
            #expect(try written(channel).isEmpty)
            try channel.writeInbound(ByteBuffer(string: "cd"))
            #expect(try written(channel).hasPrefix("HTTP/1.1 200 "))
            _ = try? channel.finish()
        }
        do {
            let (channel, _) = try channel()
            try channel.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
            var line = ByteBuffer(string: "0;")
            line.writeBytes([0xFF, 0xFF, 0xFF, 0xFF])
            line.writeString("\r\n")
            try channel.writeInbound(line)  // trailers not complete yet: the size line is put back
            #expect(try written(channel).isEmpty)
            try channel.writeInbound(ByteBuffer(string: "\r\n"))
            #expect(try written(channel).hasPrefix("HTTP/1.1 200 "))
            _ = try? channel.finish()
        }
        do {
            let (channel, _) = try channel()
            try channel.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"))
            for _ in 0..<200 { try channel.writeInbound(ByteBuffer(string: String(repeating: "a: b\r\n", count: 100))) }
            #expect(try written(channel).hasPrefix("HTTP/1.1 431 "), "endless trailers are cut off")
            _ = try? channel.finish()
        }
    }

    @Test func aHeadInOneBytePiecesIsParsedOnce() throws {
        let (channel, _) = try channel()
        for byte in "GET /slow HTTP/1.1\r\nHost: a\r\nX-Long: \(String(repeating: "v", count: 300))\r\n\r\n".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        let reply = try written(channel)
        #expect(reply.hasPrefix("HTTP/1.1 200 ") && reply.hasSuffix("/slow"), "\(reply)")
        _ = try? channel.finish()
    }

    @Test func eachRequestRestartsTheIdleClockAndAStalledReaderIsClosed() throws {
        let limits = ConnectionLimits(headerTimeout: .seconds(1), bodyTimeout: .seconds(2), idleTimeout: .seconds(5))
        do {
            let (channel, _) = try channel(limits: limits)
            for _ in 0..<3 {
                channel.embeddedEventLoop.advanceTime(by: .seconds(4))
                try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\n\r\n"))
                #expect(try written(channel).hasPrefix("HTTP/1.1 200 "))
            }
            #expect(channel.isActive, "a client sending a request every 4 s is never idle for 5")
            _ = try? channel.finish()
        }
        do {
            let (channel, _) = try channel(limits: limits)
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
            #expect(channel.isActive)
            channel.embeddedEventLoop.advanceTime(by: .seconds(2))
            #expect(!channel.isActive, "a client that reads nothing for the body timeout is closed")
        }
    }
}
