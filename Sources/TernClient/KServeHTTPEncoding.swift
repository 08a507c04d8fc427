import Foundation
import NIOCore
import NIOFoundationCompat
import TernCore

/// The client side of the KServe v2 REST encoding, for Tern's own clients (`tern infer`,
/// `tern perf`).
public enum KServeHTTPEncoding {
    /// The body of an infer request: JSON tensors, or (binary) a JSON header followed by the raw
    /// tensor bytes, whose length goes in `Inference-Header-Content-Length`. Inputs named in
    /// `sharedMemoryInputs` are sent as their place in a registered region instead of their bytes.
    public static func requestBody(
        _ request: InferenceRequest, binary: Bool, sharedMemoryInputs: [String: SharedMemoryReference] = [:]
    ) throws -> (ByteBuffer, headerLength: Int?) {
        var inputs: [[String: Any]] = []
        for tensor in request.inputs {
            var entry: [String: Any] = [
                "name": tensor.name, "datatype": tensor.dataType.protocolName, "shape": tensor.shape.map { NSNumber(value: $0) },
            ]
            if let place = sharedMemoryInputs[tensor.name] {
                entry["parameters"] = place.parameters.mapValues(jsonValue)
            } else if binary {
                entry["parameters"] = ["binary_data_size": tensor.data.count]
            } else {
                entry["data"] = try JSONTensorCodec.unpack(tensor)
            }
            inputs.append(entry)
        }
        var object: [String: Any] = ["inputs": inputs]
        if !request.id.isEmpty { object["id"] = request.id }
        object["parameters"] = ["binary_data_output": binary]
        if !request.outputs.isEmpty {
            object["outputs"] = request.outputs.map { output -> [String: Any] in
                var parameters = output.parameters.mapValues(jsonValue)
                if output.parameters["shared_memory_region"] == nil { parameters["binary_data"] = binary }
                if output.classificationCount > 0 { parameters["classification"] = output.classificationCount }
                return ["name": output.name, "parameters": parameters]
            }
        }
        let json = try JSONTensorCodec.jsonBytes(object)
        var buffer = ByteBuffer(data: json)
        guard binary else { return (buffer, nil) }
        for tensor in request.inputs where sharedMemoryInputs[tensor.name] == nil { buffer.writeData(tensor.data) }
        return (buffer, json.count)
    }

    private static func jsonValue(_ parameter: InferParameter) -> Any {
        switch parameter {
        case .bool(let v): v
        case .int64(let v): NSNumber(value: v)
        case .uint64(let v): NSNumber(value: v)
        case .double(let v): v
        case .string(let v): v
        }
    }

    /// Parses an infer response body (JSON, or JSON header plus binary outputs).
    public static func response(body: ByteBuffer, headerLength: Int?) throws -> InferenceResponse {
        let jsonLength = min(headerLength ?? body.readableBytes, body.readableBytes)
        let value = try body.withUnsafeReadableBytes { raw throws(TernError) in
            try JSONParser.parse(UnsafeRawBufferPointer(rebasing: raw[0..<jsonLength]))
        }
        if let error = value["error"]?.stringValue { throw TernError.invalidArgument(error) }
        var offset = body.readerIndex + jsonLength
        var tensors: [Tensor] = []
        for output in value["outputs"]?.arrayValue ?? [] {
            guard let name = output["name"]?.stringValue, let typeName = output["datatype"]?.stringValue,
                let type = DataType(protocolName: typeName), let shape = output["shape"]?.arrayValue
            else { throw TernError.internalError("malformed output in the response") }
            let tensorData: Data
            if let size = output["parameters"]?["binary_data_size"]?.numberValue?.int {
                guard let bytes = body.getData(at: offset, length: Int(size)) else { throw TernError.internalError("truncated binary output '\(name)'") }
                tensorData = bytes
                offset += Int(size)
            } else {
                tensorData = try JSONTensorCodec.pack(JSONTensorCodec.flatten(output["data"] ?? .array([])), as: type, name: name)
            }
            tensors.append(Tensor(name: name, dataType: type, shape: shape.compactMap { $0.numberValue?.int }, data: tensorData))
        }
        return InferenceResponse(
            modelName: value["model_name"]?.stringValue ?? "", modelVersion: Int64(value["model_version"]?.stringValue ?? "") ?? 0,
            id: value["id"]?.stringValue ?? "", outputs: tensors)
    }
}

extension KServeHTTPEncoding {
    /// A tensor from JSON `data` (flat or nested) in the KServe REST layout.
    public static func tensor(name: String, dataType: DataType, shape: [Int64], json: Any) throws -> Tensor {
        Tensor(name: name, dataType: dataType, shape: shape, data: try JSONTensorCodec.pack(JSONTensorCodec.flatten(JSONValue(foundation: json)), as: dataType, name: name))
    }

    /// The tensor's elements as JSON-ready values.
    public static func jsonValues(_ tensor: Tensor) throws -> [Any] {
        try JSONTensorCodec.unpack(tensor)
    }
}
