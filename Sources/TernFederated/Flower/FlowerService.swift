import Foundation
import GRPCCore
import TernCore
import TernTraining

/// `flwr.proto.FlowerService/Join`: one bidirectional stream per client. The server speaks first;
/// the client answers each instruction once, in order.
///
/// The handler runs one loop over a single sequence of events: instructions from the coordinator,
/// messages from the client (read by a child task as they come), and the end of either. So a
/// client that goes away is noticed at once, even between rounds; an answer that arrived before
/// the client closed is still delivered; a `ReconnectIns` goes out as soon as the answer in
/// progress is in (a Flower client that is sent it mid-fit fails writing its answer instead of
/// reconnecting), or after 5 s without one; and a message nobody asked for ends the stream as a
/// protocol error instead of being buffered.
struct FlowerService: Flwr_Proto_FlowerService.SimpleServiceProtocol {
    let coordinator: FLCoordinator

    private enum Event: Sendable {
        case instruction(FLInstruction)
        case reply(Flwr_Proto_ClientMessage)
        case clientClosed
        case coordinatorClosed
        case reconnectDue
    }

    func join(
        request: RPCAsyncSequence<Flwr_Proto_ClientMessage, any Error>,
        response: RPCWriter<Flwr_Proto_ServerMessage>,
        context: ServerContext
    ) async throws {
        let (client, instructions) = await coordinator.connect(peer: context.remotePeer)
        let (events, sink) = AsyncStream<Event>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in request { sink.yield(.reply(message)) }
                } catch {}
                sink.yield(.clientClosed)
            }
            group.addTask {
                for await instruction in instructions { sink.yield(.instruction(instruction)) }
                sink.yield(.coordinatorClosed)
            }
            var queue: [FLInstruction] = []
            var outstanding: FLInstruction?
            var reconnect: FLInstruction?
            do {
                loop: for await event in events {
                    switch event {
                    case .instruction(let instruction) where instruction.kind == .reconnect:
                        reconnect = instruction
                        queue.removeAll()
                        group.addTask {
                            try? await Task.sleep(for: .seconds(5))
                            sink.yield(.reconnectDue)
                        }
                    case .reconnectDue:
                        outstanding = nil
                    case .instruction(let instruction):
                        queue.append(instruction)
                    case .reply(let message):
                        guard let asked = outstanding else {
                            await coordinator.misbehaved(client, reason: "sent a message nobody asked for")
                            break loop
                        }
                        outstanding = nil
                        let reply = FLReply.decode(message, for: asked.kind, client: client, base: asked.base)
                        await coordinator.answered(client, kind: asked.kind, reply: reply, bytes: FLService.payloadBytes(message))
                    case .clientClosed, .coordinatorClosed:
                        break loop
                    }
                    if outstanding == nil, let reconnect {
                        // The client closes its side after this; its DisconnectRes seldom arrives.
                        try await response.write(reconnect.message)
                        break loop
                    }
                    if outstanding == nil, !queue.isEmpty {
                        let next = queue.removeFirst()
                        try await response.write(next.message)
                        outstanding = next
                    }
                }
            } catch {}
            await coordinator.disconnected(client)
            group.cancelAll()
        }
    }
}

enum FLService {
    /// Bytes of tensors an answer carries.
    static func payloadBytes(_ message: Flwr_Proto_ClientMessage) -> Int {
        switch message.msg {
        case .fitRes(let res)?: return FLWire.bytes(res.parameters)
        case .getParametersRes(let res)?: return FLWire.bytes(res.parameters)
        default: return 0
        }
    }
}
