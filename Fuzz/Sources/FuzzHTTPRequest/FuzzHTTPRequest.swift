import FuzzDriver
import NIOCore
import NIOEmbedded
@testable import TernHTTP
import TernRuntime

/// Answers every request at once, as the KServe routes do for health and metadata.
struct Echo: HTTPResponder {
    func answer(_ request: HTTPRequestData) -> HTTPAnswer {
        .now(HTTPReply(status: .ok, body: request.body))
    }
}

/// The HTTP/1 connection handler on an embedded channel: the input is sent in pieces whose sizes
/// the input's first byte picks, so heads, chunked bodies and pipelining meet every boundary.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: start, count: count)
    guard let first = bytes.first else { return 0 }
    let piece = Int(first % 64) + 1
    let channel = EmbeddedChannel()
    let limits = ConnectionLimits(maxConnections: 4)
    do {
        try channel.pipeline.syncOperations.addHandler(HTTP1Connection(responder: Echo(), maxBodySize: 1 << 16, limits: limits))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var offset = 1
        while offset < bytes.count, channel.isActive {
            let end = min(offset + piece, bytes.count)
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            while try channel.readOutbound(as: ByteBuffer.self) != nil {}
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(400))  // every timer fires
    } catch {}
    _ = try? channel.finish()
    precondition(limits.gate.current == 0, "a connection kept its place in the gate")
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
