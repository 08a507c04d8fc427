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
        // Find the end of the head.
        var headLength = 0
        while true {
            headLength = socket.peek { Self.endOfHead(in: $0) }
            if headLength > 0 { break }
            try socket.readMore()
        }
        let (status, contentLength) = try socket.consume(headLength) { try Self.parseHead($0) }
        let body = try socket.consume(contentLength) { raw in status == 200 ? nil : String(decoding: raw, as: UTF8.self) }
        return (status, body)
    }

    /// The length of the head including its blank line, or 0 when it is not complete yet.
    static func endOfHead(in bytes: UnsafeRawBufferPointer) -> Int {
        guard bytes.count >= 4 else { return 0 }
        for index in 3..<bytes.count
        where bytes[index] == 10 && bytes[index - 1] == 13 && bytes[index - 2] == 10 && bytes[index - 3] == 13 {
            return index + 1
        }
        return 0
    }

    static func parseHead(_ bytes: UnsafeRawBufferPointer) throws -> (status: Int, contentLength: Int) {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: true)
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
            let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { throw SocketError("malformed HTTP response head: \(text.prefix(80))") }
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].lowercased() == "content-length" {
                guard let length = Int(line[line.index(after: colon)...].trimmingSpaces()) else { break }
                return (status, length)
            }
        }
        throw SocketError("the HTTP response has no Content-Length")
    }
}

private extension Substring {
    func trimmingSpaces() -> Substring {
        var result = self
        while result.first == " " || result.first == "\t" { result = result.dropFirst() }
        while result.last == " " || result.last == "\t" { result = result.dropLast() }
        return result
    }
}
