import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing
import TernCore
import TernRuntime
@testable import TernHTTP

/// A drained shutdown on one HTTP/1 connection (embedded channel): the requests it has read are
/// answered, the last with `Connection: close`, and then it closes; an idle one closes at once.
@Suite struct HTTP1ConnectionDrainTests {
    /// Answers `/slow` only when the test calls `finish`, everything else at once.
    final class Held: HTTPResponder, Sendable {
        let waiting = Mutex<[@Sendable (HTTPReply) -> Void]>([])
        func answer(_ request: HTTPRequestData) -> HTTPAnswer {
            guard request.path == "/slow" else { return .now(HTTPReply(status: .ok, body: ByteBuffer(string: request.path))) }
            return .callback { reply in self.waiting.withLock { $0.append(reply) } }
        }
        func finish() {
            for reply in waiting.withLock({ list in defer { list.removeAll() }; return list }) { reply(HTTPReply(status: .ok, body: ByteBuffer(string: "slow"))) }
        }
    }

    func channel(_ responder: any HTTPResponder) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTP1Connection(responder: responder, maxBodySize: 1 << 20, limits: ConnectionLimits()))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
        return text
    }

    @Test func anIdleConnectionClosesAtOnce() throws {
        let channel = try channel(Held())
        try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\n\r\n"))
        #expect(try written(channel).contains("200 OK"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func aBusyConnectionAnswersWhatItHasReadAndThenCloses() throws {
        let held = Held()
        let channel = try channel(held)
        // One request being answered and one pipelined behind it, then the shutdown.
        try channel.writeInbound(ByteBuffer(string: "GET /slow HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        channel.embeddedEventLoop.run()
        #expect(channel.isActive, "closed with a request unanswered")
        held.finish()
        channel.embeddedEventLoop.run()
        let replies = try written(channel)
        let parts = replies.components(separatedBy: "HTTP/1.1 200 OK")
        #expect(parts.count == 3, "\(replies)")
        #expect(!parts[1].contains("Connection: close"), "the first answer keeps the connection for the request behind it")
        #expect(parts[2].contains("Connection: close") && parts[2].hasSuffix("/after"), "\(replies)")
        #expect(!channel.isActive)
    }
}
