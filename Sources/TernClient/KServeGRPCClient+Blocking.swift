import Foundation
import NIOCore
import NIOHPACK

extension KServeGRPCClient {
/// The gRPC client's blocking mode, `tern perf`'s gRPC worker: unary calls over one HTTP/2 connection written by hand on a blocking
/// socket, so that the client adds as little as possible to what is measured. The request's
/// header block and message are encoded once; every call writes one HEADERS and the DATA frames
/// its message needs. Several calls may be in flight on the connection (`start`/`next`), as
/// h2load's `-m` does. Honours the server's settings and flow-control windows, answers PING and
/// SETTINGS, and reports a non-zero `grpc-status`.
public final class BlockingCaller {
    private enum FrameType: UInt8 {
        case data = 0, headers = 1, priority = 2, rstStream = 3, settings = 4, pushPromise = 5
        case ping = 6, goAway = 7, windowUpdate = 8, continuation = 9
    }
    private static let endStream: UInt8 = 0x1, ack: UInt8 = 0x1, endHeaders: UInt8 = 0x4
    private static let padded: UInt8 = 0x8, priorityFlag: UInt8 = 0x20
    private static let ourWindow: UInt32 = 0x7FFF_FFFF

    private let socket: BlockingSocket
    private let headerBlock: [UInt8]
    private let message: [UInt8]
    private var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    private var nextStream: UInt32 = 1
    private var peerMaxFrameSize = 16_384
    private var peerInitialWindow = 65_535
    private var connectionSendWindow = 65_535
    /// Calls in flight: their send windows and the grpc-status seen so far.
    private var streams: [UInt32: (sendWindow: Int, status: String?, message: String)] = [:]
    /// Calls that ended while this client waited for something else.
    private var ended: [(UInt32, (any Error)?)] = []
    /// DATA bytes received since the connection window was last topped up.
    private var unacknowledgedData = 0

    /// `method` is the full path, e.g. `/inference.GRPCInferenceService/ModelInfer`; `message` the
    /// serialized protobuf request.
    public init(host: String, port: Int, method: String, message: [UInt8]) throws {
        socket = try BlockingSocket(host: host, port: port)
        var block: [UInt8] = [0x83, 0x86]  // :method POST, :scheme http (static table 3 and 6)
        Self.literal(nameIndex: 4, value: method, into: &block)  // :path
        Self.literal(nameIndex: 1, value: "\(host):\(port)", into: &block)  // :authority
        Self.literal(nameIndex: 31, value: "application/grpc", into: &block)  // content-type
        Self.literal(name: "te", value: "trailers", into: &block)
        headerBlock = block
        var framed: [UInt8] = [0]
        framed += withUnsafeBytes(of: UInt32(message.count).bigEndian, Array.init)
        self.message = framed + message

        var preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        var settings: [UInt8] = []
        for (id, value) in [(UInt16(2), UInt32(0)), (4, Self.ourWindow), (5, UInt32(1 << 20))] {
            settings += withUnsafeBytes(of: id.bigEndian, Array.init) + withUnsafeBytes(of: value.bigEndian, Array.init)
        }
        Self.frame(.settings, flags: 0, stream: 0, payload: settings, into: &preface)
        Self.frame(.windowUpdate, flags: 0, stream: 0, payload: withUnsafeBytes(of: (Self.ourWindow - 65_535).bigEndian, Array.init), into: &preface)
        try socket.write(preface)
    }

    /// One unary call; throws when the call does not end with grpc-status 0.
    public func call() throws {
        let stream = try start()
        while true {
            let (id, error) = try next()
            if id == stream {
                if let error { throw error }
                return
            }
        }
    }

    /// Sends one call without waiting for its answer; returns its stream id (see `next`).
    public func start() throws -> UInt32 {
        let stream = nextStream
        nextStream += 2
        streams[stream] = (peerInitialWindow, nil, "")
        // Small messages are copied into one write; large ones are written frame by frame from
        // the prepared message, so a 20 MB request is never copied per call.
        let inline = message.count <= 64 << 10
        var out: [UInt8] = []
        out.reserveCapacity(headerBlock.count + (inline ? message.count : 0) + 64)
        Self.frame(.headers, flags: Self.endHeaders, stream: stream, payload: headerBlock, into: &out)
        var offset = 0
        while offset < message.count {
            let room = min(peerMaxFrameSize, connectionSendWindow, streams[stream]?.sendWindow ?? 0)
            if room <= 0 {
                if !out.isEmpty { try socket.write(out); out.removeAll(keepingCapacity: true) }
                guard streams[stream] != nil else { return stream }  // answered (an error) before it was sent
                try readFrame()  // waits for WINDOW_UPDATE
                continue
            }
            let chunk = min(room, message.count - offset)
            let last = offset + chunk == message.count
            let payload = message[offset..<(offset + chunk)]
            if inline {
                Self.frame(.data, flags: last ? Self.endStream : 0, stream: stream, payload: payload, into: &out)
            } else {
                Self.frame(.data, flags: last ? Self.endStream : 0, stream: stream, payload: EmptyCollection<UInt8>(), length: chunk, into: &out)
                try socket.write(out, more: true)
                out.removeAll(keepingCapacity: true)
                try socket.write(payload, more: !last)
            }
            connectionSendWindow -= chunk
            streams[stream]?.sendWindow -= chunk
            offset += chunk
        }
        if !out.isEmpty { try socket.write(out) }
        return stream
    }

    /// Waits for the next call to end; returns its stream id and its error, if any.
    public func next() throws -> (UInt32, (any Error)?) {
        while ended.isEmpty { try readFrame() }
        if unacknowledgedData > 1 << 24 {
            try socket.write(Self.frameBytes(.windowUpdate, flags: 0, stream: 0, payload: withUnsafeBytes(of: UInt32(unacknowledgedData).bigEndian, Array.init)))
            unacknowledgedData = 0
        }
        return ended.removeFirst()
    }

    /// A call's stream ended: record its outcome.
    private func finish(_ stream: UInt32) {
        guard let state = streams.removeValue(forKey: stream) else { return }
        if let status = state.status {
            ended.append((stream, status == "0" ? nil : WireCallError("grpc-status \(status): \(state.message.removingPercentEncoding)")))
        } else {
            ended.append((stream, SocketError("the call ended without grpc-status")))
        }
    }

    /// Reads one frame and handles it.
    private func readFrame() throws {
        let (length, type, flags, stream) = try socket.consume(9) { raw -> (Int, UInt8, UInt8, UInt32) in
            let length = Int(raw[0]) << 16 | Int(raw[1]) << 8 | Int(raw[2])
            let stream = (UInt32(raw[5]) << 24 | UInt32(raw[6]) << 16 | UInt32(raw[7]) << 8 | UInt32(raw[8])) & 0x7FFF_FFFF
            return (length, raw[3], raw[4], stream)
        }
        let frameType = FrameType(rawValue: type)
        // A DATA payload (the reply message) is skipped without a copy; perf only needs the status.
        let payload = try socket.consume(length) { frameType == .data ? [] : Array($0) }
        switch frameType {
        case .data:
            unacknowledgedData += length
            if flags & Self.endStream != 0 { finish(stream) }
        case .headers:
            var fragment = Self.stripPadding(payload, flags: flags)
            if flags & Self.priorityFlag != 0 { fragment.removeFirst(min(5, fragment.count)) }
            var endOfHeaders = flags & Self.endHeaders != 0
            while !endOfHeaders {
                let (continuationLength, continuationFlags) = try socket.consume(9) { raw in
                    (Int(raw[0]) << 16 | Int(raw[1]) << 8 | Int(raw[2]), raw[4])
                }
                fragment += try socket.consume(continuationLength) { Array($0) }
                endOfHeaders = continuationFlags & Self.endHeaders != 0
            }
            var buffer = ByteBuffer(bytes: fragment)
            let headers = try decoder.decodeHeaders(from: &buffer)
            if let status = headers.first(name: "grpc-status") {
                streams[stream]?.status = status
                streams[stream]?.message = headers.first(name: "grpc-message") ?? ""
            }
            if flags & Self.endStream != 0 { finish(stream) }
        case .rstStream:
            let code = payload.count >= 4 ? UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3]) : 0
            if streams.removeValue(forKey: stream) != nil {
                ended.append((stream, SocketError("the server reset the stream (HTTP/2 error \(code))")))
            }
        case .settings:
            guard flags & Self.ack == 0 else { return }
            var index = 0
            while index + 6 <= payload.count {
                let id = UInt16(payload[index]) << 8 | UInt16(payload[index + 1])
                let value = Int(UInt32(payload[index + 2]) << 24 | UInt32(payload[index + 3]) << 16 | UInt32(payload[index + 4]) << 8 | UInt32(payload[index + 5]))
                if id == 4 {
                    for key in streams.keys { streams[key]?.sendWindow += value - peerInitialWindow }
                    peerInitialWindow = value
                } else if id == 5 {
                    peerMaxFrameSize = value
                }
                index += 6
            }
            try socket.write(Self.frameBytes(.settings, flags: Self.ack, stream: 0, payload: []))
        case .ping:
            if flags & Self.ack == 0 { try socket.write(Self.frameBytes(.ping, flags: Self.ack, stream: 0, payload: payload)) }
        case .goAway:
            throw SocketError("the server closed the connection (GOAWAY)")
        case .windowUpdate:
            guard payload.count >= 4 else { return }
            let increment = Int((UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3])) & 0x7FFF_FFFF)
            if stream == 0 { connectionSendWindow += increment } else { streams[stream]?.sendWindow += increment }
        case .priority, .pushPromise, .continuation, nil:
            return
        }
    }

    private static func stripPadding(_ payload: [UInt8], flags: UInt8) -> [UInt8] {
        guard flags & padded != 0, let padLength = payload.first.map(Int.init) else { return payload }
        return Array(payload.dropFirst().dropLast(min(padLength, max(0, payload.count - 1))))
    }

    /// Appends a frame; `length` overrides the payload's count when the payload is written apart.
    private static func frame<Payload: Collection<UInt8>>(
        _ type: FrameType, flags: UInt8, stream: UInt32, payload: Payload, length: Int? = nil, into out: inout [UInt8]
    ) {
        let length = length ?? payload.count
        out += [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type.rawValue, flags]
        out += withUnsafeBytes(of: stream.bigEndian, Array.init)
        out += payload
    }

    private static func frameBytes(_ type: FrameType, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        frame(type, flags: flags, stream: stream, payload: payload, into: &out)
        return out
    }

    /// HPACK integer with an `prefixBits`-bit prefix; `first` holds the bits above the prefix.
    static func integer(_ value: Int, prefixBits: Int, first: UInt8, into out: inout [UInt8]) {
        let limit = (1 << prefixBits) - 1
        if value < limit {
            out.append(first | UInt8(value))
            return
        }
        out.append(first | UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            out.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    /// A literal header field without indexing whose name is static-table entry `nameIndex`.
    static func literal(nameIndex: Int, value: String, into out: inout [UInt8]) {
        integer(nameIndex, prefixBits: 4, first: 0, into: &out)
        string(value, into: &out)
    }

    /// A literal header field without indexing with a literal name.
    static func literal(name: String, value: String, into out: inout [UInt8]) {
        out.append(0)
        string(name, into: &out)
        string(value, into: &out)
    }

    private static func string(_ text: String, into out: inout [UInt8]) {
        let bytes = Array(text.utf8)
        integer(bytes.count, prefixBits: 7, first: 0, into: &out)
        out += bytes
    }
}
}

private extension String {
    /// grpc-message is percent-encoded.
    var removingPercentEncoding: String {
        var bytes: [UInt8] = []
        var iterator = Array(utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
