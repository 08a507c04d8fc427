import Foundation
import NIOCore
import Testing
import TernCore
import TernRuntime
@testable import TernHTTP

@Suite struct InferHTTPCodecTests {
    func body(json: String, binary: [UInt8] = []) -> (ByteBuffer, Int) {
        var buffer = ByteBuffer(string: json)
        buffer.writeBytes(binary)
        return (buffer, json.utf8.count)
    }

    @Test func decodesBinaryTensorsWithoutCopying() throws {
        let floats: [Float] = [1, 2, 3, 4]
        let raw = floats.withUnsafeBytes { Array($0) }
        let json = #"{"id":"7","inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":true,"classification":2}}]}"#
        let (buffer, length) = body(json: json, binary: raw)
        let (request, binary) = try InferHTTPCodec.decodeRequest(body: buffer, headerLength: length, model: "m", version: 3, sharedMemory: SharedMemoryRegistry())
        #expect(request.id == "7" && request.modelVersion == 3)
        #expect(try request.inputs[0].values(as: Float.self) == floats)
        #expect(request.outputs == [RequestedOutput(name: "y", classificationCount: 2, parameters: ["binary_data": .bool(true), "classification": .int64(2)])])
        #expect(binary.isBinary("y") && !binary.isBinary("z"))
    }

    @Test func decodesNestedJSONDataOfEveryKind() throws {
        let json = #"""
            {"inputs":[
              {"name":"f","datatype":"FP32","shape":[2,2],"data":[[1.5,2],[3,4]]},
              {"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]},
              {"name":"i","datatype":"INT8","shape":[2],"data":[-128,127]},
              {"name":"u","datatype":"UINT64","shape":[1],"data":[18446744073709551615]},
              {"name":"s","datatype":"BYTES","shape":[2],"data":["ab",""]}],
             "parameters":{"binary_data_output":true,"priority":1}}
            """#
        let (request, binary) = try InferHTTPCodec.decodeRequest(body: ByteBuffer(string: json), headerLength: nil, model: "m", version: nil, sharedMemory: SharedMemoryRegistry())
        #expect(try request.inputs[0].values(as: Float.self) == [1.5, 2, 3, 4])
        #expect(request.inputs[1].data == Data([1, 0]))
        #expect(try request.inputs[2].values(as: Int8.self) == [-128, 127])
        #expect(try request.inputs[3].values(as: UInt64.self) == [UInt64.max])
        #expect(try request.inputs[4].strings() == [Data("ab".utf8), Data()])
        #expect(request.parameters == ["binary_data_output": .bool(true), "priority": .int64(1)])
        #expect(binary.isBinary("anything"))
    }

    @Test func rejectsMalformedInput() {
        let cases: [(String, [UInt8], Int?)] = [
            ("{", [], nil),
            ("[]", [], nil),
            (#"{"inputs":[{"name":"x","datatype":"FP99","shape":[1],"data":[1]}]}"#, [], nil),
            (#"{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":[300]}]}"#, [], nil),
            (#"{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1.5]}]}"#, [], nil),
            (#"{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}"#, [], nil),
            (#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":8}}]}"#, [0, 0, 0, 0], 0),
            (#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#, [0, 0, 0, 0, 9], 0),
        ]
        for (json, binary, headerOffset) in cases {
            var buffer = ByteBuffer(string: json)
            buffer.writeBytes(binary)
            let header = headerOffset.map { _ in json.utf8.count }
            #expect(throws: TernError.self, "\(json)") {
                _ = try InferHTTPCodec.decodeRequest(body: buffer, headerLength: header, model: "m", version: nil, sharedMemory: SharedMemoryRegistry())
            }
        }
    }

    @Test func encodesBinaryAndJSONOutputs() throws {
        let response = InferenceResponse(
            modelName: "m", modelVersion: 2, id: "q",
            outputs: [Tensor(name: "a", shape: [2], values: [Int32(5), -1]), Tensor(name: "b", shape: [1], strings: [Data("hi".utf8)])])
        let (buffer, jsonLength) = try InferHTTPCodec.encodeResponse(
            response, binary: OutputPolicy(defaultBinary: false, explicit: ["a": true]), allocator: ByteBufferAllocator())
        let length = try #require(jsonLength)
        let bytes = Array(buffer.readableBytesView)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(bytes[0..<length])) as? [String: Any])
        #expect(json["model_version"] as? String == "2" && json["id"] as? String == "q")
        let outputs = try #require(json["outputs"] as? [[String: Any]])
        #expect((outputs[0]["parameters"] as? [String: Any])?["binary_data_size"] as? Int == 8)
        #expect(outputs[1]["data"] as? [String] == ["hi"])
        #expect(Array(bytes[length...]) == [5, 0, 0, 0, 255, 255, 255, 255])
    }
}
