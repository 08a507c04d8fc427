
/// `tern perf`'s HTTP/1.1 worker: the request (head and body) is encoded once and written with one
/// call per repetition; the response's status line and Content-Length are parsed, the body skipped.
package final class WireHTTPClient {
    private let socket: BlockingSocket
    private var request: [UInt8]
    /// Where the request's id lies when each call gets a fresh one (`idPlaceholder` was encoded).
    private let idOffset: Int?
    private var random = SystemRandomNumberGenerator()

    /// An id that a request is encoded with when every call should carry a random one of its length.
    package static let idPlaceholder = "tern-perf-request-id-placeholder"

    /// `freshIDs`: the body was encoded with `idPlaceholder` as the request's id; each call replaces it.
    package init(host: String, port: Int, path: String, headers: [(String, String)], body: [UInt8], freshIDs: Bool = false) throws {
        socket = try BlockingSocket(host: host, port: port)
        var head = "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: \(body.count)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        let bytes = Array(head.utf8) + body
        let marker = Array("\"\(Self.idPlaceholder)\"".utf8)
        idOffset = freshIDs ? bytes.firstRange(of: marker).map { $0.lowerBound + 1 } : nil
        if freshIDs && idOffset == nil { throw WireCallError("the encoded request has no id to replace") }
        request = bytes
    }

    /// Sends the request once; returns the status code and the body (kept only on an error status).
    @discardableResult
    package func roundTrip() throws -> (status: Int, errorBody: String?) {
        if let idOffset {
            // 32 random hex digits in place of the placeholder (lengths, and so headers, unchanged).
            let hex: StaticString = "0123456789abcdef"
            for half in 0..<2 {
                let bits = random.next()
                for digit in 0..<16 { request[idOffset + half * 16 + digit] = hex.utf8Start[Int((bits >> UInt64(4 * digit)) & 15)] }
            }
        }
        try socket.write(request)
        let head = try HTTP1ResponseHead.read(from: socket)
        let body = try socket.consume(try head.contentLength()) { raw in head.status == 200 ? nil : String(decoding: raw, as: UTF8.self) }
        return (head.status, body)
    }
}
