import NIOCore
import Synchronization

/// The open connections of one listener, for a drained shutdown: each is asked to finish what it
/// has read and close (`ChannelShouldQuiesceEvent`: HTTP/1 answers and closes, HTTP/2 sends
/// GOAWAY), and those still open when the time is up are closed. Shared by both frontends, like
/// the TLS set-up in this target.
public final class ChannelSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    public init() {}

    /// Tracks `channel` until it closes.
    public func insert(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = channels.withLock { $0.removeValue(forKey: key) } }
    }

    public var count: Int { channels.withLock { $0.count } }

    /// Asks every connection to quiesce, waits up to `timeout` for all to close, then closes the
    /// rest; returns how many had to be closed.
    public func drain(timeout: Duration) async -> Int {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + timeout
        while count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let left = channels.withLock { Array($0.values) }
        for channel in left { channel.close(promise: nil) }
        return left.count
    }
}
