import NIOCore
import Synchronization

/// The open connections of one listener, for a drained shutdown: each is asked to finish what it
/// has read and close (`ChannelShouldQuiesceEvent`: HTTP/1 answers and closes, HTTP/2 sends
/// GOAWAY), and those still open when the time is up are closed. Shared by both frontends, like
/// the TLS set-up in this target.
public final class ChannelSet: Sendable {
    private struct Open {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// Set once a drain began: a connection accepted after that is asked to quiesce at once.
        var draining = false
    }

    private let open = Mutex(Open())

    /// Makes an empty set that is not draining.
    public init() {}

    /// Tracks `channel` until it closes. During a drain it is asked to quiesce straight away (a
    /// connection the listener accepted just before it closed).
    public func insert(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        let draining = open.withLock { open in
            open.channels[key] = channel
            return open.draining
        }
        channel.closeFuture.whenComplete { [self] _ in _ = open.withLock { $0.channels.removeValue(forKey: key) } }
        if draining { Self.quiesce(channel) }
    }

    /// How many tracked connections are still open.
    public var count: Int { open.withLock { $0.channels.count } }

    private static func quiesce(_ channel: any Channel) {
        channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
    }

    /// Asks every connection to quiesce, waits up to `timeout` for all to close, then closes the
    /// rest; returns how many had to be closed.
    public func drain(timeout: Duration) async -> Int {
        let snapshot = open.withLock { open in
            open.draining = true
            return Array(open.channels.values)
        }
        for channel in snapshot { Self.quiesce(channel) }
        let deadline = ContinuousClock.now + timeout
        while count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let left = open.withLock { Array($0.channels.values) }
        for channel in left { channel.close(promise: nil) }
        return left.count
    }
}
