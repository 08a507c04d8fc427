import Foundation
import TernCore

/// The client's direction of the gRPC codec: engine requests to ModelInferRequest messages and
/// ModelInferResponse messages back (the server's direction is TernGRPC's `GRPCConversions`).
package enum KServeGRPCCodec {
    /// An engine request as a ModelInferRequest with raw_input_contents (but for the inputs in
    /// shared memory, which carry their place as parameters).
    package static func message(_ request: InferenceRequest, sharedMemoryInputs: [String: SharedMemoryReference] = [:]) -> Inference_ModelInferRequest {
        var message = Inference_ModelInferRequest()
        message.modelName = request.modelName
        message.modelVersion = request.modelVersion.map(String.init) ?? ""
        message.id = request.id
        message.inputs = request.inputs.map { tensor in
            var input = Inference_ModelInferRequest.InferInputTensor()
            input.name = tensor.name
            input.datatype = tensor.dataType.protocolName
            input.shape = tensor.shape
            if let place = sharedMemoryInputs[tensor.name] { input.parameters = protocolParameters(place.parameters) }
            return input
        }
        message.rawInputContents = request.inputs.filter { sharedMemoryInputs[$0.name] == nil }.map(\.data)
        message.outputs = request.outputs.map { output in
            var requested = Inference_ModelInferRequest.InferRequestedOutputTensor()
            requested.name = output.name
            requested.parameters = protocolParameters(output.parameters)
            if output.classificationCount > 0 {
                var count = Inference_InferParameter()
                count.int64Param = Int64(output.classificationCount)
                requested.parameters["classification"] = count
            }
            return requested
        }
        return message
    }

    package static func protocolParameters(_ parameters: [String: InferParameter]) -> [String: Inference_InferParameter] {
        parameters.mapValues { value in
            var parameter = Inference_InferParameter()
            switch value {
            case .bool(let v): parameter.parameterChoice = .boolParam(v)
            case .int64(let v): parameter.parameterChoice = .int64Param(v)
            case .uint64(let v): parameter.parameterChoice = .uint64Param(v)
            case .double(let v): parameter.parameterChoice = .doubleParam(v)
            case .string(let v): parameter.parameterChoice = .stringParam(v)
            }
            return parameter
        }
    }

    /// A ModelInferResponse as an engine response.
    package static func response(_ message: Inference_ModelInferResponse) throws -> InferenceResponse {
        guard message.rawOutputContents.count == message.outputs.count else {
            throw TernError.internalError("the response has \(message.outputs.count) outputs but \(message.rawOutputContents.count) raw contents")
        }
        let outputs = try zip(message.outputs, message.rawOutputContents).map { output, data -> Tensor in
            guard let type = DataType(protocolName: output.datatype) else { throw TernError.internalError("unknown datatype \(output.datatype)") }
            return Tensor(name: output.name, dataType: type, shape: output.shape, data: data)
        }
        return InferenceResponse(modelName: message.modelName, modelVersion: Int64(message.modelVersion) ?? 0, id: message.id, outputs: outputs)
    }
}
