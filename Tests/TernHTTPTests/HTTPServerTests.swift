import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import TernCore
import TernHTTP
import TernTesting

/// The HTTP frontend on a real socket (port 0), with raw HTTP/1.1 requests.
@Suite struct HTTPServerTests {
    /// Sends one request and returns status and body.
    func send(_ port: Int, _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws -> (HTTPResponseStatus, ByteBuffer, HTTPHeaders) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
            }
        }
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            head.headers.add(name: "Host", value: "localhost")
            head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
            for (name, value) in headers { head.headers.add(name: name, value: value) }
            try await outbound.write(.head(head))
            if let body { try await outbound.write(.body(.byteBuffer(body))) }
            try await outbound.write(.end(nil))
            var status = HTTPResponseStatus.imATeapot
            var headers = HTTPHeaders()
            var collected = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let head): status = head.status; headers = head.headers
                case .body(var chunk): collected.writeBuffer(&chunk)
                case .end: return (status, collected, headers)
                }
            }
            return (status, collected, headers)
        }
    }

    @Test func servesTheKServeRoutes() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        let server = try await TestServer.start(engine: try await TestEnvironment.startedServer(repository: repo))
        defer { Task { await server.stop() } }
        let port = server.httpPort
        #expect(try await send(port, .GET, "/v2/health/ready").0 == .ok)
        #expect(try await send(port, .GET, "/v2/models/add_sub/ready").0 == .ok)
        #expect(try await send(port, .GET, "/v2/models/nope/ready").0 == .badRequest)
        let (status, body, _) = try await send(port, .GET, "/v2/models/nope")
        #expect(status == .notFound && String(buffer: body).contains("\"error\""))

        let request = InferenceRequest(
            modelName: "add_sub",
            inputs: [Tensor(name: "INPUT0", shape: [1, 16], values: [Float](repeating: 1, count: 16)),
                     Tensor(name: "INPUT1", shape: [1, 16], values: [Float](repeating: 3, count: 16))])
        for binary in [true, false] {
            let (payload, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: binary)
            let (status, reply, headers) = try await send(
                port, .POST, "/v2/models/add_sub/infer",
                headers: headerLength.map { [("Inference-Header-Content-Length", String($0))] } ?? [], body: payload)
            #expect(status == .ok)
            let jsonLength = headers.first(name: "Inference-Header-Content-Length").flatMap(Int.init)
            #expect((jsonLength != nil) == binary)
            let response = try KServeHTTPEncoding.response(body: reply, headerLength: jsonLength)
            #expect(try response.output(named: "OUTPUT1")?.values(as: Float.self) == [Float](repeating: -2, count: 16))
        }
        let (bad, badBody, _) = try await send(port, .POST, "/v2/models/add_sub/infer", body: ByteBuffer(string: "{oops"))
        #expect(bad == .badRequest && String(buffer: badBody).contains("error"))
    }

    @Test func refusesOversizedBodiesAndUnknownRoutes() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        let server = try await TestServer.start(engine: try await TestEnvironment.startedServer(repository: repo), maxBodySize: 1024)
        defer { Task { await server.stop() } }
        let port = server.httpPort
        let (tooLarge, body, _) = try await send(port, .POST, "/v2/models/add_sub/infer", body: ByteBuffer(repeating: UInt8(ascii: " "), count: 4096))
        #expect(tooLarge == .payloadTooLarge && String(buffer: body).contains("1024"))
        #expect(try await send(port, .GET, "/v2/nothing/here").0 == .notFound)
        #expect(try await send(port, .DELETE, "/v2/models/add_sub").0 == .notFound)
        #expect(try await send(port, .GET, "/v2/models/add_sub/versions/x").0 == .badRequest)
        #expect(try await send(port, .GET, "/v2/models/add_sub/versions/1?verbose=1").0 == .ok)
        // and it still answers
        #expect(try await send(port, .GET, "/v2/health/live").0 == .ok)
    }
}
