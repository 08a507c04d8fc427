import Foundation
import Testing
import TernCore
import TernTraining
@testable import TernFederated

/// Flower's messages read as the answers the engine expects.
@Suite struct FlowerReplyTests {
    static func fitRes(status: Flwr_Proto_Status? = nil, tensors: [Data]) -> Flwr_Proto_ClientMessage {
        var res = Flwr_Proto_ClientMessage.FitRes()
        if let status { res.status = status }
        res.parameters.tensors = tensors
        res.numExamples = 12
        res.metrics = ["train_loss": FLScalar.double(0.5).proto]
        var message = Flwr_Proto_ClientMessage()
        message.fitRes = res
        return message
    }

    @Test func answersDecodeOrSayWhyNot() throws {
        let weights: FLWeights = [FLArray(shape: [2, 2], values: [1, 2, 3, 4]), FLArray(dataType: .fp64, shape: [1], values: [9])]
        let parameters = try FLWire.parameters(weights)
        #expect(parameters.tensorType == "numpy.ndarray")
        guard case .fit(.success(let result)) = FLReply.decode(Self.fitRes(tensors: parameters.tensors), for: .fit(round: 1), client: "c") else {
            Issue.record("the fit answer did not decode")
            return
        }
        #expect(result.weights == weights && result.numExamples == 12 && result.metrics["train_loss"] == .double(0.5))
        let failed = FLWire.failed(.fit(round: 1), "out of memory")
        #expect(failed.code.rawValue == 3 && failed.message == "out of memory")  // flwr's FIT code
        #expect(FLWire.failed(.evaluate(round: 1), "").code.rawValue == 4 && FLWire.failed(.getParameters, "").code.rawValue == 2)
        guard case .fit(.failure(.clientError)) = FLReply.decode(Self.fitRes(status: failed, tensors: []), for: .fit(round: 1), client: "c") else {
            Issue.record("a status other than OK is a client error")
            return
        }
        guard case .fit(.failure(.badParameters)) = FLReply.decode(Self.fitRes(tensors: [Data("not npy".utf8)]), for: .fit(round: 1), client: "c") else {
            Issue.record("a tensor that is not .npy is bad parameters")
            return
        }
        guard case .evaluate(.failure(.protocolError)) = FLReply.decode(Self.fitRes(tensors: []), for: .evaluate(round: 1), client: "c") else {
            Issue.record("a fit answer to an evaluation is a protocol error")
            return
        }
        var scalars = Flwr_Proto_ClientMessage()
        var evaluate = Flwr_Proto_ClientMessage.EvaluateRes()
        evaluate.loss = 0.25
        evaluate.numExamples = 3
        evaluate.metrics = ["accuracy": FLScalar.double(0.75).proto, "n": FLScalar.int(3).proto, "ok": FLScalar.bool(true).proto]
        scalars.evaluateRes = evaluate
        guard case .evaluate(.success(let eval)) = FLReply.decode(scalars, for: .evaluate(round: 2), client: "c") else {
            Issue.record("the evaluation did not decode")
            return
        }
        #expect(eval.loss == 0.25 && eval.metrics["n"] == .int(3) && eval.metrics["ok"] == .bool(true))
        #expect(FLWire.reconnect.reconnectIns.seconds == 0)
    }
}
