import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime
import TernTLS

/// Parsing and validating request heads: the request line, header fields and framing headers.
extension HTTP1Connection {
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
    static func parseHead(_ buffer: inout ByteBuffer, scanned: inout Int) throws -> Head? {
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
