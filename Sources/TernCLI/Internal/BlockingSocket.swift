import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A TCP connection used with blocking reads and writes from one thread. `tern perf` measures the
/// server, so its network workers avoid every hop they can: one thread per connection, one
/// `write` per request, reads straight into a reusable buffer.
final class BlockingSocket {
    private let fd: Int32
    /// Bytes read but not yet consumed are `buffer[start..<end]`.
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    init(host: String, port: Int) throws {
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
    func write<Bytes: ContiguousBytes>(_ bytes: Bytes, more: Bool = false) throws {
        let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = send(fd, raw.baseAddress! + offset, raw.count - offset, flags)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw SocketError("write failed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    /// Bytes available without another read.
    var available: Int { end - start }

    /// Reads until at least `count` unconsumed bytes are buffered.
    func fill(_ count: Int) throws {
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
                throw SocketError("read failed: \(String(cString: strerror(errno)))")
            }
            end += got
        }
    }

    /// Runs `body` over the next `count` unconsumed bytes (reading them first) and consumes them.
    func consume<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        try fill(count)
        defer {
            start += count
            if start == end { start = 0; end = 0 }
        }
        return try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<(start + count)])) }
    }

    /// Looks at the unconsumed bytes without consuming them.
    func peek<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
    }

    /// Reads more bytes (at least one) after those already buffered.
    func readMore() throws { try fill(available + 1) }
}

struct SocketError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A call that reached the server and was answered with an error (the connection is fine).
struct WireCallError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
