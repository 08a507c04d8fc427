import NIOCore
import NIOHTTP1
import NIOPosix

/// One keep-alive HTTP/1.1 connection for Tern's own clients (`tern infer`, `tern perf`): a request
/// is written and its response read before the next, with no pooling or redirects in the way.
package struct HTTPConnection {
    package struct Response {
        package var status: HTTPResponseStatus
        package var headers: HTTPHeaders
        package var body: ByteBuffer
    }

    /// Opens a connection and runs `body` with it; the connection is closed afterwards.
    package static func with<T: Sendable>(
        host: String, port: Int, _ body: (inout Exchange) async throws -> T
    ) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var exchange = Exchange(host: host, inbound: inbound.makeAsyncIterator(), outbound: outbound)
            return try await body(&exchange)
        }
    }

    /// Sends requests and reads their responses on one connection.
    package struct Exchange {
        let host: String
        var inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>

        package mutating func send(
            _ method: HTTPMethod, _ path: String, headers extra: [(String, String)] = [], body: ByteBuffer? = nil
        ) async throws -> Response {
            var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            head.headers.add(name: "Host", value: host)
            head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
            for (name, value) in extra { head.headers.add(name: name, value: value) }
            try await outbound.write(.head(head))
            if let body { try await outbound.write(.body(.byteBuffer(body))) }
            try await outbound.write(.end(nil))
            var response: Response? = nil
            while let part = try await inbound.next() {
                switch part {
                case .head(let head): response = Response(status: head.status, headers: head.headers, body: ByteBuffer())
                case .body(var chunk): response?.body.writeBuffer(&chunk)
                case .end: if let response { return response }
                }
            }
            throw HTTPConnectionError.closed
        }
    }
}

package enum HTTPConnectionError: Error, CustomStringConvertible {
    case closed
    package var description: String { "the server closed the connection" }
}
