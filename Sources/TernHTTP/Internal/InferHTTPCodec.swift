import Foundation
import NIOCore
import NIOFoundationCompat
import TernCore

/// Decodes KServe v2 REST inference requests (JSON, or JSON followed by binary tensor data when
/// `Inference-Header-Content-Length` is set) and encodes responses the same way.
enum InferHTTPCodec {
    /// Parses `body` into a request for `model`/`version`. Binary tensor data is not copied: the
    /// tensors view the request buffer.
    static func decodeRequest(
        body: ByteBuffer, headerLength: Int?, model: String, version: Int64?
    ) throws(TernError) -> (InferenceRequest, BinaryOutputPolicy) {
        let jsonLength = headerLength ?? body.readableBytes
        guard jsonLength >= 0, jsonLength <= body.readableBytes else {
            throw .invalidArgument(
                "Inference-Header-Content-Length \(jsonLength) is larger than the request body (\(body.readableBytes) bytes)")
        }
        let jsonData = body.getData(at: body.readerIndex, length: jsonLength, byteTransferStrategy: .noCopy) ?? Data()
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: jsonData)
        } catch {
            throw .invalidArgument("failed to parse the request JSON: \(jsonLength == 0 ? "empty body" : "malformed JSON")")
        }
        guard let object = parsed as? [String: Any] else {
            throw .invalidArgument("the request JSON must be an object")
        }
        guard let inputs = object["inputs"] as? [Any] else {
            throw .invalidArgument("the request JSON has no 'inputs' array")
        }
        var binaryOffset = body.readerIndex + jsonLength
        let binaryEnd = body.readerIndex + body.readableBytes
        var tensors: [Tensor] = []
        tensors.reserveCapacity(inputs.count)
        for (index, item) in inputs.enumerated() {
            guard let input = item as? [String: Any] else { throw .invalidArgument("inputs[\(index)] must be an object") }
            guard let name = input["name"] as? String else { throw .invalidArgument("inputs[\(index)] has no 'name'") }
            guard let typeName = input["datatype"] as? String else { throw .invalidArgument("input '\(name)' has no 'datatype'") }
            guard let type = DataType(protocolName: typeName) else {
                throw .invalidArgument("input '\(name)': unknown datatype '\(typeName)'")
            }
            guard let shapeValues = input["shape"] as? [Any] else { throw .invalidArgument("input '\(name)' has no 'shape'") }
            var shape: [Int64] = []
            for dim in shapeValues {
                guard let number = dim as? NSNumber, !JSONTensorCodec.isBool(dim), number.doubleValue.rounded() == number.doubleValue, number.int64Value >= 0 else {
                    throw .invalidArgument("input '\(name)': shape must hold non-negative integers, found '\(dim)'")
                }
                shape.append(number.int64Value)
            }
            let parameters = try decodeParameters(input["parameters"], context: "input '\(name)'")
            let data: Data
            if let size = parameters["binary_data_size"]?.integerValue {
                guard headerLength != nil else {
                    throw .invalidArgument("input '\(name)' has binary_data_size but the request has no Inference-Header-Content-Length header")
                }
                guard size >= 0, binaryOffset + Int(size) <= binaryEnd else {
                    throw .invalidArgument("input '\(name)': binary_data_size \(size) runs past the end of the request body")
                }
                data = body.getData(at: binaryOffset, length: Int(size), byteTransferStrategy: .noCopy) ?? Data()
                binaryOffset += Int(size)
            } else {
                guard let raw = input["data"] else { throw .invalidArgument("input '\(name)' has neither 'data' nor binary_data_size") }
                data = try JSONTensorCodec.pack(JSONTensorCodec.flatten(raw), as: type, name: name)
            }
            tensors.append(Tensor(name: name, dataType: type, shape: shape, data: data))
        }
        if binaryOffset != binaryEnd, headerLength != nil {
            throw .invalidArgument("the request body has \(binaryEnd - binaryOffset) bytes of binary data that no input claims")
        }
        let parameters = try decodeParameters(object["parameters"], context: "request")
        var requested: [RequestedOutput] = []
        var policy = BinaryOutputPolicy(defaultBinary: parameters["binary_data_output"]?.boolValue ?? false)
        if let outputs = object["outputs"] as? [Any] {
            for (index, item) in outputs.enumerated() {
                guard let output = item as? [String: Any], let name = output["name"] as? String else {
                    throw .invalidArgument("outputs[\(index)] must be an object with a 'name'")
                }
                let outputParameters = try decodeParameters(output["parameters"], context: "output '\(name)'")
                if let binary = outputParameters["binary_data"]?.boolValue { policy.explicit[name] = binary }
                let classes = Int(outputParameters["classification"]?.integerValue ?? 0)
                requested.append(RequestedOutput(name: name, classificationCount: classes, parameters: outputParameters))
            }
        }
        var id = ""
        if let value = object["id"] {
            guard let string = value as? String else { throw .invalidArgument("'id' must be a string") }
            id = string
        }
        let request = InferenceRequest(
            modelName: model, modelVersion: version, id: id, parameters: parameters, inputs: tensors, outputs: requested)
        return (request, policy)
    }

    static func decodeParameters(_ value: Any?, context: String) throws(TernError) -> [String: InferParameter] {
        guard let value else { return [:] }
        guard let object = value as? [String: Any] else { throw .invalidArgument("\(context): 'parameters' must be an object") }
        var parameters: [String: InferParameter] = [:]
        for (key, raw) in object {
            if JSONTensorCodec.isBool(raw), let bool = raw as? Bool {
                parameters[key] = .bool(bool)
                continue
            }
            switch raw {
            case let string as String: parameters[key] = .string(string)
            case let number as NSNumber:
                let double = number.doubleValue
                if double.rounded() == double, abs(double) < 9.2e18 { parameters[key] = .int64(number.int64Value) } else { parameters[key] = .double(double) }
            default:
                throw .invalidArgument("\(context): parameter '\(key)' must be a bool, number or string")
            }
        }
        return parameters
    }

    /// Encodes a response: JSON alone, or JSON followed by the binary outputs, in which case the
    /// JSON length is returned for the `Inference-Header-Content-Length` header.
    static func encodeResponse(
        _ response: InferenceResponse, binary: BinaryOutputPolicy, allocator: ByteBufferAllocator
    ) throws(TernError) -> (ByteBuffer, headerLength: Int?) {
        var outputs: [[String: Any]] = []
        var binaries: [Data] = []
        for tensor in response.outputs {
            var entry: [String: Any] = [
                "name": tensor.name, "datatype": tensor.dataType.protocolName, "shape": tensor.shape.map { NSNumber(value: $0) },
            ]
            if binary.isBinary(tensor.name) {
                entry["parameters"] = ["binary_data_size": tensor.data.count]
                binaries.append(tensor.data)
            } else {
                entry["data"] = try JSONTensorCodec.unpack(tensor)
            }
            outputs.append(entry)
        }
        var object: [String: Any] = [
            "model_name": response.modelName, "model_version": String(response.modelVersion), "outputs": outputs,
        ]
        if !response.id.isEmpty { object["id"] = response.id }
        let json = try jsonBytes(object)
        var buffer = allocator.buffer(capacity: json.count + binaries.reduce(0) { $0 + $1.count })
        buffer.writeBytes(json)
        for data in binaries { buffer.writeData(data) }
        return (buffer, binaries.isEmpty ? nil : json.count)
    }

    static func jsonBytes(_ object: Any) throws(TernError) -> Data {
        do {
            return try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])
        } catch {
            throw .internalError("cannot encode the response as JSON: \(error)")
        }
    }
}

/// Which outputs go back as binary data: per output `binary_data`, else the request's
/// `binary_data_output`.
struct BinaryOutputPolicy {
    var defaultBinary: Bool
    var explicit: [String: Bool] = [:]

    func isBinary(_ name: String) -> Bool { explicit[name] ?? defaultBinary }
}
