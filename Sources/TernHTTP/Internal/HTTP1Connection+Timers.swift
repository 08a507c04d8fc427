import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime
import TernTLS

/// The timers that close a stalled connection: idle, head, body and stalled-reader timeouts.
extension HTTP1Connection {
    /// Arms the timer the connection's state calls for: the idle timeout between requests, the
    /// head timeout once a head has begun (not restarted by later bytes of it), the body timeout
    /// while a body is read (restarted by each piece) and while answers wait for a client that
    /// does not read them (restarted whenever it reads enough); none while an answer is computed.
    func updateTimer(context: ChannelHandlerContext) {
        guard admitted, !isClosing else { return }
        let wanted: TimerKind?
        if !context.channel.isWritable {
            wanted = .stalled  // the client does not read its answers
        } else if isAnswering {
            wanted = nil
        } else if currentHead != nil {
            wanted = .body
        } else if let pending, pending.readableBytes > 0 {
            wanted = .head
        } else {
            wanted = .idle
        }
        if let timer, timer.kind == wanted { return }
        timer?.task.cancel()
        timer = nil
        guard let wanted else { return }
        let delay: Duration
        switch wanted {
        case .idle: delay = limits.idleTimeout
        case .head: delay = limits.headerTimeout
        case .body, .stalled: delay = limits.bodyTimeout
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay.nanoseconds))) {
            let (handler, context) = loopBound.value
            handler.timedOut(wanted, context: context)
        }
        timer = (wanted, task)
    }

    private func timedOut(_ kind: TimerKind, context: ChannelHandlerContext) {
        guard timer?.kind == kind, !isClosing else { return }
        timer = nil
        switch kind {
        case .idle, .stalled:
            state = .closing
            context.close(promise: nil)
        case .head:
            pending = nil
            reject(.requestTimeout, "the request head did not arrive within \(limits.headerTimeout)", version: .http1_1, context: context)
        case .body:
            pending = nil
            reject(.requestTimeout, "no request body bytes arrived for \(limits.bodyTimeout)", version: currentHead?.version ?? .http1_1, context: context)
        }
    }
}
