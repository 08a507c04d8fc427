import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A TCP connection used with blocking reads and writes from one thread, for Tern's own clients:
/// `tern perf` (which measures the server, so its workers avoid every hop they can: one thread per
/// connection, one `write` per request, reads straight into a reusable buffer) and the remote
/// backend, whose model instances already run on their own threads.
public final class BlockingSocket {
    private let fd: Int32
    /// Bytes read but not yet consumed are `buffer[start..<end]`.
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    /// Connects; with a `timeout`, connecting and every later read or write give up after it.
    public init(host: String, port: Int, timeout: Duration? = nil) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw SocketError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = 0
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        var connected: Int32 = -1
        while let info = candidate {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0, let timeout {
                // Linux's connect() honours the send timeout too.
                let seconds = timeout.components.seconds
                var value = timeval(tv_sec: Int(seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
            }
            if fd >= 0 {
                if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                    connected = fd
                    break
                }
                lastError = errno
                close(fd)
            }
            candidate = info.pointee.ai_next
        }
        guard connected >= 0 else { throw SocketError("cannot connect to \(host):\(port): \(String(cString: strerror(lastError)))") }
        var one: Int32 = 1
        setsockopt(connected, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        fd = connected
        buffer = [UInt8](repeating: 0, count: 64 << 10)
    }

    deinit { close(fd) }

    /// Writes all of `bytes`; `more` tells the kernel that more follows at once (MSG_MORE), so
    /// a frame header and its payload written separately still leave in one segment.
    public func write<Bytes: ContiguousBytes>(_ bytes: Bytes, more: Bool = false) throws {
        let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = send(fd, raw.baseAddress! + offset, raw.count - offset, flags)
                if written < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { throw SocketError("write timed out", timedOut: true) }
                    throw SocketError("write failed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    /// Bytes available without another read.
    public var available: Int { end - start }

    /// Reads until at least `count` unconsumed bytes are buffered.
    public func fill(_ count: Int) throws {
        if start + count > buffer.count {
            // Move the unconsumed bytes to the front, and grow when they cannot fit.
            if count > buffer.count { buffer.append(contentsOf: repeatElement(0, count: count - buffer.count)) }
            if start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    _ = memmove(raw.baseAddress!, raw.baseAddress! + start, end - start)
                }
                end -= start
                start = 0
            }
        }
        while end - start < count {
            let got = buffer.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress! + end, raw.count - end, 0)
            }
            if got == 0 { throw SocketError("the server closed the connection") }
            if got < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw SocketError("read timed out", timedOut: true) }
                throw SocketError("read failed: \(String(cString: strerror(errno)))")
            }
            end += got
        }
    }

    /// Runs `body` over the next `count` unconsumed bytes (reading them first) and consumes them.
    public func consume<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        try fill(count)
        defer {
            start += count
            if start == end { start = 0; end = 0 }
        }
        return try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<(start + count)])) }
    }

    /// Looks at the unconsumed bytes without consuming them.
    public func peek<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
    }

    /// Reads more bytes (at least one) after those already buffered.
    public func readMore() throws { try fill(available + 1) }
}

/// The connection failed (and is not usable any more); `timedOut` when a timeout expired.
public struct SocketError: Error, CustomStringConvertible {
    /// What went wrong with the connection, in words.
    public let description: String
    /// Whether the failure was a timeout expiring rather than another connection error.
    public let timedOut: Bool
    /// Makes an error from its message, marked as a timeout when `timedOut` is true.
    public init(_ description: String, timedOut: Bool = false) {
        self.description = description
        self.timedOut = timedOut
    }
}

/// A call that reached the server and was answered with an error (the connection is fine).
public struct WireCallError: Error, CustomStringConvertible {
    /// What went wrong with the call, in words, e.g. the HTTP or gRPC status and the server's message.
    public let description: String
    /// Makes an error from the message describing what went wrong with the call.
    public init(_ description: String) { self.description = description }
}

/// The status line and headers of an HTTP/1.1 response, read from a `BlockingSocket`.
public struct HTTP1ResponseHead: Sendable {
    /// The response's HTTP status code, e.g. 200.
    public var status: Int
    /// The response's headers in the order received, each value with surrounding whitespace trimmed.
    public var headers: [(name: String, value: String)]

    /// The value of a header (case-insensitive name).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// Reads and consumes the next response head from `socket`.
    public static func read(from socket: BlockingSocket) throws -> HTTP1ResponseHead {
        var length = 0
        while true {
            length = socket.peek { endOfHead(in: $0) }
            if length > 0 { break }
            try socket.readMore()
        }
        return try socket.consume(length) { try parse($0) }
    }

    /// The length of the head including its blank line, or 0 when it is not complete yet.
    public static func endOfHead(in bytes: UnsafeRawBufferPointer) -> Int {
        guard bytes.count >= 4 else { return 0 }
        for index in 3..<bytes.count
        where bytes[index] == 10 && bytes[index - 1] == 13 && bytes[index - 2] == 10 && bytes[index - 3] == 13 {
            return index + 1
        }
        return 0
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> HTTP1ResponseHead {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: true)
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
            let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { throw SocketError("malformed HTTP response head: \(text.prefix(80))") }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
        }
        return HTTP1ResponseHead(status: status, headers: headers)
    }

    /// The body length; responses without Content-Length are not supported by these clients.
    public func contentLength() throws -> Int {
        guard let text = header("Content-Length"), let length = Int(text), length >= 0 else {
            throw SocketError("the HTTP response has no Content-Length")
        }
        return length
    }
}
