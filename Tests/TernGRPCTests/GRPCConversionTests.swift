import Foundation
import Testing
import TernClient
import TernCore
@testable import TernGRPC

@Suite struct GRPCConversionTests {
    @Test func typedContentsBecomeTensors() throws {
        var message = Inference_ModelInferRequest()
        message.modelName = "m"
        message.modelVersion = "4"
        var a = Inference_ModelInferRequest.InferInputTensor()
        a.name = "a"
        a.datatype = "INT16"
        a.shape = [2]
        a.contents.intContents = [-3, 300]
        var s = Inference_ModelInferRequest.InferInputTensor()
        s.name = "s"
        s.datatype = "BYTES"
        s.shape = [1]
        s.contents.bytesContents = [Data("x".utf8)]
        message.inputs = [a, s]
        var output = Inference_ModelInferRequest.InferRequestedOutputTensor()
        output.name = "y"
        var k = Inference_InferParameter()
        k.int64Param = 3
        output.parameters["classification"] = k
        message.outputs = [output]
        let request = try GRPCConversions.request(message)
        #expect(request.modelVersion == 4)
        #expect(try request.inputs[0].values(as: Int16.self) == [-3, 300])
        #expect(try request.inputs[1].strings() == [Data("x".utf8)])
        #expect(request.outputs[0].classificationCount == 3)
    }

    @Test func rawContentsAreUsedAsTheyAre() throws {
        var message = Inference_ModelInferRequest()
        var a = Inference_ModelInferRequest.InferInputTensor()
        a.name = "a"
        a.datatype = "FP16"
        a.shape = [1]
        message.inputs = [a]
        message.rawInputContents = [Data([0, 60])]
        #expect(try GRPCConversions.request(message).inputs[0].data == Data([0, 60]))
        message.rawInputContents = [Data(), Data()]
        #expect(throws: TernError.self) { try GRPCConversions.request(message) }
    }

    @Test func badValuesAreInvalidArguments() {
        var message = Inference_ModelInferRequest()
        var a = Inference_ModelInferRequest.InferInputTensor()
        a.name = "a"
        a.datatype = "INT8"
        a.shape = [1]
        a.contents.intContents = [1000]
        message.inputs = [a]
        #expect(throws: TernError.self) { try GRPCConversions.request(message) }
        message.inputs[0].datatype = "FP16"
        #expect(throws: TernError.self) { try GRPCConversions.request(message) }
        message.modelVersion = "x"
        #expect(throws: TernError.self) { try GRPCConversions.request(message) }
    }

    @Test func errorsMapToTritonStatuses() {
        // gRPC status numbers: NOT_FOUND 5, INVALID_ARGUMENT 3, UNAVAILABLE 14, INTERNAL 13.
        #expect(GRPCStatus(TernError.notFound("x")).code.rawValue == 5)
        #expect(GRPCStatus(TernError.invalidArgument("x")).code.rawValue == 3)
        #expect(GRPCStatus(TernError.unavailable("x")).code.rawValue == 14)
        #expect(GRPCStatus(TernError.internalError("x")).code.rawValue == 13)
        #expect(GRPCStatus(TernError.permissionDenied("x")).code.rawValue == 7)
    }

    @Test func responsesUseRawOutputContents() {
        let response = InferenceResponse(modelName: "m", modelVersion: 1, id: "i", outputs: [Tensor(name: "o", shape: [1], values: [Float(2)])])
        let message = GRPCConversions.response(response)
        #expect(message.modelVersion == "1" && message.outputs[0].datatype == "FP32" && message.outputs[0].shape == [1])
        #expect(message.rawOutputContents == [response.outputs[0].data])
    }
}
