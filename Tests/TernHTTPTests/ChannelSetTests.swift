import NIOCore
import NIOPosix
import Synchronization
import Testing
import TernTLS

/// The open connections of a listener during a drained shutdown, on real sockets.
@Suite struct ChannelSetTests {
    /// Counts the quiesce events a connection gets, and closes it on the first (as an idle
    /// HTTP/1 connection does).
    final class QuiesceProbe: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let seen = Atomic(0)
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is ChannelShouldQuiesceEvent, seen.add(1, ordering: .relaxed).newValue == 1 { context.close(promise: nil) }
            context.fireUserInboundEventTriggered(event)
        }
    }

    static func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<1000 where !condition() { try await Task.sleep(for: .milliseconds(5)) }
        #expect(condition())
    }

    @Test func connectionsOpenAtTheDrainAndAcceptedDuringItAreBothAskedToQuiesce() async throws {
        let set = ChannelSet()
        let probes = Mutex<[QuiesceProbe]>([])
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let probe = QuiesceProbe()
                    try channel.pipeline.syncOperations.addHandler(probe)
                    probes.withLock { $0.append(probe) }
                    set.insert(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        let first = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        try await Self.waitUntil { probes.withLock { $0.count } == 1 }
        // The drain asks the open connection to quiesce; it closes, so nothing is closed by force.
        #expect(await set.drain(timeout: .seconds(5)) == 0)
        #expect(probes.withLock { $0[0].seen.load(ordering: .relaxed) } == 1)
        // A connection accepted after the drain began (the listener was closing) is asked at once.
        let late = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
        try await Self.waitUntil { probes.withLock { $0.count == 2 && $0[1].seen.load(ordering: .relaxed) == 1 } }
        try? await first.close()
        try? await late.close()
        try await listener.close()
    }
}
