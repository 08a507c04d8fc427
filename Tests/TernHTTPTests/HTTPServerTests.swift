import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import TernClient
import TernCore
import TernHTTP
import TernTesting

/// The HTTP frontend on a real socket (port 0), with raw HTTP/1.1 requests.
@Suite struct HTTPServerTests {
    /// Sends one request with TernClient's HTTP client and returns status, body and headers.
    func send(_ port: Int, _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil) async throws -> (HTTPResponseStatus, ByteBuffer, HTTPHeaders) {
        let reply = try await KServeHTTPClient(host: "127.0.0.1", port: port).send(method, path, headers: headers, body: body)
        return (HTTPResponseStatus(statusCode: reply.status), reply.body, reply.headers)
    }

    @Test func servesTheKServeRoutes() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        try await withTestServer(repo) { server in
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
    }

    @Test func refusesOversizedBodiesAndUnknownRoutes() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        try await withTestServer(repo, maxBodySize: 1024) { server in
            let port = server.httpPort
            let (tooLarge, body, _) = try await send(port, .POST, "/v2/models/add_sub/infer", body: ByteBuffer(repeating: UInt8(ascii: " "), count: 4096))
            #expect(tooLarge == .payloadTooLarge && String(buffer: body).contains("1024"))
            #expect(try await send(port, .GET, "/v2/nothing/here").0 == .notFound)
            // A path that exists for another method: 405 naming the methods it takes.
            let (wrongMethod, _, allowed) = try await send(port, .DELETE, "/v2/models/add_sub")
            #expect(wrongMethod == .methodNotAllowed && allowed.first(name: "Allow") == "GET")
            #expect(try await send(port, .DELETE, "/v2/nothing/here").0 == .notFound)
            #expect(try await send(port, .GET, "/v2/models/add_sub/versions/x").0 == .badRequest)
            #expect(try await send(port, .GET, "/v2/models/add_sub/versions/1?verbose=1").0 == .ok)
            // and it still answers
            #expect(try await send(port, .GET, "/v2/health/live").0 == .ok)
        }
    }

    /// Writes `bytes` on a plain TCP connection and reads until the server closes it.
    func rawExchange(_ port: Int, _ text: String, then more: String? = nil) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func sendAll(_ text: String) {
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        sendAll(text)
        if let more {
            // Wait for the interim answer before sending the rest.
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got > 0 { received += chunk[0..<got] }
            sendAll(more)
        }
        while true {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got <= 0 { break }
            received += chunk[0..<got]
        }
        return String(decoding: received, as: UTF8.self)
    }

    @Test func speaksHTTP11OnTheWire() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        try await withTestServer(repo, maxBodySize: 4096) { server in
            let port = server.httpPort
            let body = #"{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]},{"name":"INPUT1","datatype":"FP32","shape":[1,16],"data":[2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]}]}"#

            // Pipelined: three requests in one write are answered in order; the last asks to close.
            let pipelined = try rawExchange(port,
                "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                + "POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                + "GET /v2/models/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let statuses = pipelined.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(while: { $0 != "\r\n" })) }
            #expect(statuses == ["200 OK", "200 OK", "404 Not Found"], "\(pipelined)")
            #expect(pipelined.contains("[3.0,3.0,") && pipelined.contains("Connection: close"))

            // A chunked body, split at awkward places, with a chunk extension and a trailer.
            let half = body.utf8.count / 2
            let first = String(body.prefix(half)), second = String(body.dropFirst(half))
            let chunked = try rawExchange(port,
                "POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + String(first.utf8.count, radix: 16) + ";ext=1\r\n\(first)\r\n"
                + String(second.utf8.count, radix: 16) + "\r\n\(second)\r\n0\r\nX-Trailer: 1\r\n\r\n")
            #expect(chunked.hasPrefix("HTTP/1.1 200 OK") && chunked.contains("[3.0,3.0,"))

            // Expect: 100-continue gets its interim answer before the body is sent.
            let continued = try rawExchange(port,
                "POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n",
                then: body)
            #expect(continued.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"))

            // HTTP/1.0 closes after the answer unless asked to keep the connection.
            let old = try rawExchange(port, "GET /v2/health/ready HTTP/1.0\r\n\r\n")
            #expect(old.hasPrefix("HTTP/1.0 200 OK") && old.contains("Connection: close"))

            // Malformed requests: a 4xx/5xx with a JSON error, then the connection closes.
            #expect(try rawExchange(port, "NONSENSE\r\n\r\n").hasPrefix("HTTP/1.1 400 Bad Request"))
            #expect(try rawExchange(port, "GET / HTTP/2.0\r\n\r\n").hasPrefix("HTTP/1.1 505"))
            #expect(try rawExchange(port, "POST /v2/models/add_sub/infer HTTP/1.1\r\nContent-Length: nope\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            #expect(try rawExchange(port, "POST /v2/models/add_sub/infer HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").hasPrefix("HTTP/1.1 501"))
            let huge = try rawExchange(port, "GET /v2 HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 70_000) + "\r\n\r\n")
            #expect(huge.hasPrefix("HTTP/1.1 431"))
            let tooLarge = try rawExchange(port,
                "POST /v2/models/add_sub/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n" + String(repeating: "a", count: 0x2000) + "\r\n0\r\n\r\n")
            #expect(tooLarge.hasPrefix("HTTP/1.1 413") && tooLarge.contains("\"error\""))
            // and the server still answers
            #expect(try await send(port, .GET, "/v2/health/live").0 == .ok)
        }
    }
}
