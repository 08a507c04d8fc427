import TernHTTP

/// `tern perf`'s HTTP/1.1 worker: the request (head and body) is encoded once and written with one
/// call per repetition; the response's status line and Content-Length are parsed, the body skipped.
final class WireHTTPClient {
    private let socket: BlockingSocket
    private let request: [UInt8]

    init(host: String, port: Int, path: String, headers: [(String, String)], body: [UInt8]) throws {
        socket = try BlockingSocket(host: host, port: port)
        var head = "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        request = Array(head.utf8) + body
    }

    /// Sends the request once; returns the status code and the body (kept only on an error status).
    @discardableResult
    func roundTrip() throws -> (status: Int, errorBody: String?) {
        try socket.write(request)
        let head = try HTTP1ResponseHead.read(from: socket)
        let body = try socket.consume(try head.contentLength()) { raw in head.status == 200 ? nil : String(decoding: raw, as: UTF8.self) }
        return (head.status, body)
    }
}
