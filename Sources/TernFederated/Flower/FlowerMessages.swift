import Foundation
import TernCore
import TernTraining

/// What the coordinator asked a client, so its answer can be read as the right kind.
enum FLInstructionKind: Sendable, Equatable {
    case getParameters
    case getProperties
    case fit(round: Int)
    case evaluate(round: Int)
    case reconnect
}

/// One message for a client's stream with what it asks.
struct FLInstruction: Sendable {
    var kind: FLInstructionKind
    var message: Flwr_Proto_ServerMessage
    /// Bytes of tensors the message carries.
    var payloadBytes: Int
    /// The global weights a compressed update answering this fit is relative to.
    var base: FLWeights? = nil
}

/// A client's answer, decoded off the coordinator's actor (a 100 MB model decodes in the
/// connection's own task).
enum FLReply: Sendable {
    case parameters(Result<FLWeights, FLFailureReason>)
    case properties([String: FLScalar]?)
    case fit(Result<FitResult, FLFailureReason>)
    case evaluate(Result<EvaluateResult, FLFailureReason>)
    case other

    /// Reads `message` as the answer to `kind` from `client`.
    static func decode(_ message: Flwr_Proto_ClientMessage, for kind: FLInstructionKind, client: String, base: FLWeights? = nil) -> FLReply {
        switch (kind, message.msg) {
        case (.getParameters, .getParametersRes(let res)?):
            guard res.status.code == .ok else { return .parameters(.failure(.clientError)) }
            return .parameters(FLWire.weights(res.parameters))
        case (.getParameters, _):
            return .parameters(.failure(.protocolError))
        case (.getProperties, .getPropertiesRes(let res)?):
            return .properties(res.status.code == .ok ? FLScalar.map(res.properties) : nil)
        case (.getProperties, _):
            return .properties(nil)
        case (.fit, .fitRes(let res)?):
            guard res.status.code == .ok else { return .fit(.failure(.clientError)) }
            guard (0...(1 << 40)).contains(res.numExamples) else { return .fit(.failure(.badParameters)) }
            let weights = base.flatMap { UpdateCompression.apply(res.parameters, base: $0) } ?? FLWire.weights(res.parameters)
            return .fit(weights.map {
                FitResult(clientID: client, weights: $0, numExamples: Int(res.numExamples), metrics: FLScalar.map(res.metrics))
            })
        case (.fit, _):
            return .fit(.failure(.protocolError))
        case (.evaluate, .evaluateRes(let res)?):
            guard res.status.code == .ok else { return .evaluate(.failure(.clientError)) }
            guard (0...(1 << 40)).contains(res.numExamples) else { return .evaluate(.failure(.badParameters)) }
            return .evaluate(.success(EvaluateResult(
                clientID: client, loss: Double(res.loss), numExamples: Int(res.numExamples), metrics: FLScalar.map(res.metrics))))
        case (.evaluate, _):
            return .evaluate(.failure(.protocolError))
        case (.reconnect, _):
            return .other
        }
    }
}

/// Flower's wire forms of weights and instructions.
enum FLWire {
    /// The arrays of `Parameters` (each a `.npy` file); any that does not decode fails them all.
    static func weights(_ parameters: Flwr_Proto_Parameters) -> Result<FLWeights, FLFailureReason> {
        var out: FLWeights = []
        out.reserveCapacity(parameters.tensors.count)
        for (index, data) in parameters.tensors.enumerated() {
            guard let array = try? FLArray(npy: data, index: index), array.values.allSatisfy(\.isFinite) else { return .failure(.badParameters) }
            out.append(array)
        }
        return .success(out)
    }

    /// `Parameters` holding `weights` as `.npy` files, `tensor_type` `numpy.ndarray`.
    static func parameters(_ weights: FLWeights) throws(TernError) -> Flwr_Proto_Parameters {
        var parameters = Flwr_Proto_Parameters()
        parameters.tensorType = "numpy.ndarray"
        parameters.tensors = try weights.map { array throws(TernError) in try array.npy() }
        return parameters
    }

    static func bytes(_ parameters: Flwr_Proto_Parameters) -> Int {
        parameters.tensors.reduce(0) { $0 + $1.count }
    }

    static func fit(_ parameters: Flwr_Proto_Parameters, config: [String: FLScalar]) -> Flwr_Proto_ServerMessage {
        var ins = Flwr_Proto_ServerMessage.FitIns()
        ins.parameters = parameters
        ins.config = FLScalar.proto(config)
        var message = Flwr_Proto_ServerMessage()
        message.fitIns = ins
        return message
    }

    static func evaluate(_ parameters: Flwr_Proto_Parameters, config: [String: FLScalar]) -> Flwr_Proto_ServerMessage {
        var ins = Flwr_Proto_ServerMessage.EvaluateIns()
        ins.parameters = parameters
        ins.config = FLScalar.proto(config)
        var message = Flwr_Proto_ServerMessage()
        message.evaluateIns = ins
        return message
    }

    /// The status of an answer the client could not give, with the reason. Flower's `Code` has no
    /// general error: besides OK (0) it has one code per instruction, 1 to 4 in the order
    /// get_properties, get_parameters, fit, evaluate, and any code other than OK is a failure to the
    /// server (Flower's and Tern's alike). The answer carries its instruction's code.
    static func failed(_ instruction: FLInstructionKind, _ message: String) -> Flwr_Proto_Status {
        let code: Int
        switch instruction {
        case .getProperties: code = 1
        case .getParameters: code = 2
        case .fit: code = 3
        case .evaluate, .reconnect: code = 4
        }
        var status = Flwr_Proto_Status()
        status.code = Flwr_Proto_Code(rawValue: code) ?? .UNRECOGNIZED(code)
        status.message = message
        return status
    }

    static var getParameters: Flwr_Proto_ServerMessage {
        var message = Flwr_Proto_ServerMessage()
        message.getParametersIns = Flwr_Proto_ServerMessage.GetParametersIns()
        return message
    }

    static var getProperties: Flwr_Proto_ServerMessage {
        var message = Flwr_Proto_ServerMessage()
        message.getPropertiesIns = Flwr_Proto_ServerMessage.GetPropertiesIns()
        return message
    }

    static var reconnect: Flwr_Proto_ServerMessage {
        var ins = Flwr_Proto_ServerMessage.ReconnectIns()
        ins.seconds = 0
        var message = Flwr_Proto_ServerMessage()
        message.reconnectIns = ins
        return message
    }
}
