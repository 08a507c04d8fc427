import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime
import TernTLS

/// Reading request bodies: Content-Length and chunked transfer coding.
extension HTTP1Connection {
    /// Where a body that arrives in pieces is gathered: its whole length at once (no regrowth
    /// copies), placed so that the binary tensor data after an `Inference-Header-Content-Length`
    /// JSON header starts 64-byte aligned — the tensors then point into this buffer and ONNX
    /// Runtime reads them where they are, rather than copying misaligned elements first.
    /// (Reserving the declared length up front costs no memory before bytes arrive: an allocation
    /// that large is mapped lazily, so resident memory grows with what is actually received.)
    private static func bodyBuffer(for head: Head) -> ByteBuffer {
        let alignment = 64
        var buffer = ByteBufferAllocator().buffer(capacity: head.contentLength + alignment)
        // Only a placement hint: clamped to the body, so no header value can overflow the arithmetic.
        let jsonLength = min(max(head.headers.first(name: "Inference-Header-Content-Length").flatMap { Int($0) } ?? 0, 0), head.contentLength)
        let start = buffer.withUnsafeMutableWritableBytes { Int(bitPattern: $0.baseAddress) }
        let padding = (alignment - (start + max(jsonLength, 0)) % alignment) % alignment
        buffer.moveWriterIndex(forwardBy: padding)
        buffer.moveReaderIndex(forwardBy: padding)
        return buffer
    }

    /// Reads body bytes of the head being read from `buffer`; true once the body is complete.
    func readBody(_ buffer: inout ByteBuffer) throws -> Bool {
        guard var head = currentHead else { return true }
        defer { state = .readingBody(head) }
        if !head.chunked {
            let wanted = head.contentLength - body.readableBytes
            if wanted == 0 { return true }
            let available = min(wanted, buffer.readableBytes)
            if body.readableBytes == 0, available == wanted {
                body = buffer.readSlice(length: available)!  // the whole body in one piece: no copy
            } else {
                if body.readableBytes == 0 { body = Self.bodyBuffer(for: head) }
                var slice = buffer.readSlice(length: available)!
                body.writeBuffer(&slice)
            }
            return body.readableBytes == head.contentLength
        }
        while true {
            if let left = head.chunkLeft {
                if left > 0 {
                    let take = min(left, buffer.readableBytes)
                    if take == 0 { return false }
                    var slice = buffer.readSlice(length: take)!
                    body.writeBuffer(&slice)
                    head.chunkLeft = left - take
                    if body.readableBytes > maxBodySize { return false }
                    if head.chunkLeft! > 0 { return false }
                }
                // The CRLF after a chunk's data.
                guard buffer.readableBytes >= 2 else { return false }
                guard buffer.readString(length: 2) == "\r\n" else { throw ParseError.bad(.badRequest, "malformed chunked body") }
                head.chunkLeft = nil
            }
            let lineStart = buffer.readerIndex
            guard let line = Self.readLine(&buffer, limit: 1024) else {
                if buffer.readableBytes > 1024 { throw ParseError.bad(.badRequest, "malformed chunk size") }
                return false
            }
            let sizeText = line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: " \t") } ?? ""
            guard let size = Int(sizeText, radix: 16), size >= 0 else { throw ParseError.bad(.badRequest, "malformed chunk size '\(line)'") }
            if size == 0 {
                // Trailer fields, then an empty line.
                var copy = buffer
                while true {
                    if copy.readerIndex - buffer.readerIndex > Self.maxHeadSize {
                        throw ParseError.bad(.requestHeaderFieldsTooLarge, "chunked trailers larger than \(Self.maxHeadSize) bytes")
                    }
                    guard let trailer = Self.readLine(&copy, limit: Self.maxHeadSize) else {
                        if copy.readableBytes > Self.maxHeadSize || copy.readerIndex - buffer.readerIndex + copy.readableBytes > Self.maxHeadSize {
                            throw ParseError.bad(.requestHeaderFieldsTooLarge, "chunked trailers larger than \(Self.maxHeadSize) bytes")
                        }
                        // Incomplete: put the size line back (to where it began) by consuming nothing.
                        buffer.moveReaderIndex(to: lineStart)
                        return false
                    }
                    if trailer.isEmpty { break }
                }
                buffer = copy
                return true
            }
            guard size <= maxBodySize - body.readableBytes else {
                throw ParseError.bad(.payloadTooLarge, "request body larger than the limit of \(maxBodySize) bytes")
            }
            head.chunkLeft = size
        }
    }

    /// One CRLF-terminated line (without the CRLF), consumed from `buffer`; nil when incomplete.
    private static func readLine(_ buffer: inout ByteBuffer, limit: Int) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.prefix(limit + 1).firstIndex(of: 13) else { return nil }
        guard cr + 1 < view.endIndex else { return nil }
        guard view[cr + 1] == 10 else { return nil }
        let line = buffer.getString(at: view.startIndex, length: cr - view.startIndex) ?? ""
        buffer.moveReaderIndex(forwardBy: cr - view.startIndex + 2)
        return line
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var result = self
        while let first = result.first, set.contains(first) { result = result.dropFirst() }
        while let last = result.last, set.contains(last) { result = result.dropLast() }
        return String(result)
    }
}
