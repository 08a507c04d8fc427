import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import ServiceLifecycle
import Synchronization
import TernCore
import TernRuntime
import TernTLS
#if canImport(Glibc)
import Glibc
#endif

/// The calls in progress on one HTTP/2 connection. Its stream channels all run on the
/// connection's event loop, so a plain counter is enough.
final class ConnectionLoad: @unchecked Sendable {
    // @unchecked: only touched from the connection's event loop.
    var activeCalls = 0 {
        didSet { if activeCalls == 0 { becameIdle?() } }
    }
    /// Told when the last call ends (restarts the idle timeout).
    var becameIdle: (() -> Void)?
    /// Set by a drained shutdown: streams end once they have answered what they read.
    private(set) var quiescing = false
    /// The open streaming calls, told when the connection quiesces.
    private var streams: [ObjectIdentifier: () -> Void] = [:]

    func addStream(_ key: ObjectIdentifier, onQuiesce: @escaping () -> Void) {
        if quiescing { onQuiesce() } else { streams[key] = onQuiesce }
    }

    func removeStream(_ key: ObjectIdentifier) { streams[key] = nil }

    /// The connection is asked to quiesce: every streaming call is told (HTTP/2's GOAWAY alone
    /// would leave a bidirectional stream open until the grace time ran out).
    func quiesce() {
        guard !quiescing else { return }
        quiescing = true
        let waiting = streams
        streams = [:]
        for (_, tell) in waiting { tell() }
    }
}

/// First handler of a gRPC connection: takes a place in the connection gate (closing the
/// connection at once when every place is held) and closes a connection that has had no call in
/// progress and received nothing for the idle timeout.
final class GRPCConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let limits: ConnectionLimits
    private let load: ConnectionLoad
    private var admitted = false
    private var timer: Scheduled<Void>?

    init(limits: ConnectionLimits, load: ConnectionLoad) {
        self.limits = limits
        self.load = load
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context: context)
        context.fireChannelActive()
    }

    private func admit(context: ChannelHandlerContext) {
        guard !admitted else { return }
        guard limits.gate.enter() else {
            context.close(promise: nil)
            return
        }
        admitted = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        load.becameIdle = {
            let (handler, context) = loopBound.value
            handler.arm(context: context)
        }
        arm(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if load.activeCalls == 0 { arm(context: context) } else { timer?.cancel(); timer = nil }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { load.quiesce() }
        context.fireUserInboundEventTriggered(event)
    }

    private func arm(context: ChannelHandlerContext) {
        timer?.cancel()
        let timeout = limits.idleTimeout
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            let (handler, context) = loopBound.value
            if handler.load.activeCalls == 0 { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    private func release() {
        timer?.cancel()
        timer = nil
        load.becameIdle = nil
        if admitted {
            admitted = false
            limits.gate.leave()
        }
    }
}
