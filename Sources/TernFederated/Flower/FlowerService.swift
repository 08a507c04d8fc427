import Foundation
import TernTraining
import GRPCCore
import TernCore

/// `flwr.proto.FlowerService/Join`: one bidirectional stream per client. The server speaks first;
/// the client answers each instruction once, in order. One task reads the client's messages as
/// they come (so a client that goes away is noticed at once, even between rounds), the handler
/// writes each instruction and waits for its answer.
struct FlowerService: Flwr_Proto_FlowerService.SimpleServiceProtocol {
    let coordinator: FLCoordinator

    func join(
        request: RPCAsyncSequence<Flwr_Proto_ClientMessage, any Error>,
        response: RPCWriter<Flwr_Proto_ServerMessage>,
        context: ServerContext
    ) async throws {
        let client = context.remotePeer
        let (replies, repliesIn) = AsyncStream<Flwr_Proto_ClientMessage>.makeStream()
        let instructions = await coordinator.connect(client)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in request { repliesIn.yield(message) }
                } catch {}
                repliesIn.finish()
                await coordinator.disconnected(client)
            }
            var answers = replies.makeAsyncIterator()
            do {
                for await instruction in instructions {
                    try await response.write(instruction.message)
                    // After ReconnectIns the Python client closes its side; its DisconnectRes
                    // seldom arrives, and the end of the stream is the acknowledgement.
                    if instruction.kind == .reconnect { break }
                    guard let message = await answers.next() else { break }
                    let reply = FLReply.decode(message, for: instruction.kind, client: client, base: instruction.base)
                    await coordinator.answered(client, kind: instruction.kind, reply: reply, bytes: FLService.payloadBytes(message))
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
