import Foundation
import NIOCore
import NIOFoundationCompat
import TernClient
import TernCore
import TernRuntime

/// Decodes KServe v2 REST inference requests (JSON, or JSON followed by binary tensor data when
/// `Inference-Header-Content-Length` is set) and encodes responses the same way.
enum InferHTTPCodec {
    /// Parses `body` into a request for `model`/`version`. Binary tensor data is not copied: the
    /// tensors view the request buffer, or the shared memory an input names. A shape sent with its
    /// data may declare at most `maxTensorBytes`.
    static func decodeRequest(
        body: ByteBuffer, headerLength: Int?, model: String, version: Int64?, sharedMemory: SharedMemoryRegistry,
        maxTensorBytes: Int = .max
    ) throws(TernError) -> (InferenceRequest, OutputPolicy) {
        let jsonLength = headerLength ?? body.readableBytes
        guard jsonLength >= 0, jsonLength <= body.readableBytes else {
            throw .invalidArgument(
                "Inference-Header-Content-Length \(jsonLength) is larger than the request body (\(body.readableBytes) bytes)")
        }
        let parsed: JSONValue
        do throws(TernError) {
            parsed = try body.withUnsafeReadableBytes { raw throws(TernError) in
                try JSONParser.parse(UnsafeRawBufferPointer(rebasing: raw[0..<jsonLength]))
            }
        } catch {
            throw .invalidArgument("failed to parse the request JSON: \(jsonLength == 0 ? "empty body" : error.message)")
        }
        guard let object = parsed.objectValue else {
            throw .invalidArgument("the request JSON must be an object")
        }
        guard let inputs = object["inputs"]?.arrayValue else {
            throw .invalidArgument("the request JSON has no 'inputs' array")
        }
        var binaryOffset = body.readerIndex + jsonLength
        let binaryEnd = body.readerIndex + body.readableBytes
        var tensors: [Tensor] = []
        tensors.reserveCapacity(inputs.count)
        for (index, item) in inputs.enumerated() {
            guard let input = item.objectValue else { throw .invalidArgument("inputs[\(index)] must be an object") }
            guard let name = input["name"]?.stringValue else { throw .invalidArgument("inputs[\(index)] has no 'name'") }
            guard let typeName = input["datatype"]?.stringValue else { throw .invalidArgument("input '\(name)' has no 'datatype'") }
            guard let type = DataType(protocolName: typeName) else {
                throw .invalidArgument("input '\(name)': unknown datatype '\(typeName)'")
            }
            guard let shapeValues = input["shape"]?.arrayValue else { throw .invalidArgument("input '\(name)' has no 'shape'") }
            var shape: [Int64] = []
            for dim in shapeValues {
                guard let value = dim.numberValue?.int, value >= 0 else {
                    throw .invalidArgument("input '\(name)': shape must hold non-negative integers, found \(dim.description)")
                }
                shape.append(value)
            }
            let parameters = try decodeParameters(input["parameters"], context: "input '\(name)'")
            let inRequest = parameters["shared_memory_region"] == nil
            try Tensor.checkDeclared(shape: shape, type: type, name: name, limit: inRequest ? maxTensorBytes : .max)
            let data: Data
            if let place = try SharedMemoryReference(parameters: parameters, context: "input '\(name)'") {
                if input["data"] != nil || parameters["binary_data_size"] != nil {
                    throw .invalidArgument(
                        "input '\(name)' must set only one of 'data', 'binary_data_size' in 'parameters' and 'shared_memory_region' in 'parameters'")
                }
                data = try sharedMemory.inputData(place)
            } else if let sizeParameter = parameters["binary_data_size"] {
                guard let size = sizeParameter.integerValue, size >= 0 else {
                    throw .invalidArgument("input '\(name)': binary_data_size must be a non-negative integer, not \(sizeParameter.jsonText)")
                }
                guard headerLength != nil else {
                    throw .invalidArgument("input '\(name)' has binary_data_size but the request has no Inference-Header-Content-Length header")
                }
                guard size <= binaryEnd - binaryOffset else {
                    throw .invalidArgument(
                        "input '\(name)': binary_data_size \(size) runs past the end of the request body (\(binaryEnd - binaryOffset) bytes of binary data left at body offset \(binaryOffset - body.readerIndex))")
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
        var policy = OutputPolicy(defaultBinary: parameters["binary_data_output"]?.boolValue ?? false)
        if let outputs = object["outputs"]?.arrayValue {
            for (index, item) in outputs.enumerated() {
                guard let output = item.objectValue, let name = output["name"]?.stringValue else {
                    throw .invalidArgument("outputs[\(index)] must be an object with a 'name'")
                }
                let outputParameters = try decodeParameters(output["parameters"], context: "output '\(name)'")
                if let binary = outputParameters["binary_data"]?.boolValue { policy.explicit[name] = binary }
                if let place = try SharedMemoryReference(parameters: outputParameters, context: "output '\(name)'") {
                    if outputParameters["binary_data"]?.boolValue == true {
                        throw .invalidArgument("output '\(name)' can't set both 'shared_memory_region' and 'binary_data'")
                    }
                    policy.sharedMemory[name] = place
                }
                let classes = Int(outputParameters["classification"]?.integerValue ?? 0)
                requested.append(RequestedOutput(name: name, classificationCount: classes, parameters: outputParameters))
            }
        }
        var id = ""
        if let value = object["id"] {
            guard let string = value.stringValue else { throw .invalidArgument("'id' must be a string") }
            id = string
        }
        let request = InferenceRequest(
            modelName: model, modelVersion: version, id: id, parameters: parameters, inputs: tensors, outputs: requested)
        return (request, policy)
    }

    static func decodeParameters(_ value: JSONValue?, context: String) throws(TernError) -> [String: InferParameter] {
        guard let value else { return [:] }
        guard let object = value.objectValue else { throw .invalidArgument("\(context): 'parameters' must be an object") }
        var parameters: [String: InferParameter] = [:]
        for (key, raw) in object {
            switch raw {
            case .bool(let bool): parameters[key] = .bool(bool)
            case .string(let string): parameters[key] = .string(string)
            case .number(let number):
                if let int = number.int { parameters[key] = .int64(int) }
                else if let uint = number.uint { parameters[key] = .uint64(uint) }
                else { parameters[key] = .double(number.double) }
            default:
                throw .invalidArgument("\(context): parameter '\(key)' must be a bool, number or string")
            }
        }
        return parameters
    }

    /// Encodes a response: JSON alone, or JSON followed by the binary outputs, in which case the
    /// JSON length is returned for the `Inference-Header-Content-Length` header.
    static func encodeResponse(
        _ response: InferenceResponse, binary: OutputPolicy, allocator: ByteBufferAllocator
    ) throws(TernError) -> (ByteBuffer, headerLength: Int?) {
        let binaryBytes = response.outputs.reduce(0) { binary.isBinary($1.name) ? $0 + $1.data.count : $0 }
        // Room for the whole answer at once: growing the buffer copies it.
        let jsonEstimate = 128 + response.modelName.utf8.count + response.id.utf8.count + 64 * response.parameters.count
            + response.outputs.reduce(0) { total, tensor in
                let inline = binary.isBinary(tensor.name) || binary.sharedMemory[tensor.name] != nil ? 0 : 16 * min(tensor.elementCount, tensor.data.count)
                return total + 96 + tensor.name.utf8.count + inline
            }
        var json = JSONWriter(buffer: allocator.buffer(capacity: jsonEstimate + binaryBytes))
        var anyBinary = false
        json.beginObject()
        json.key("model_name"); json.string(response.modelName)
        json.key("model_version"); json.quotedInteger(response.modelVersion)
        if !response.id.isEmpty { json.key("id"); json.string(response.id) }
        if !response.parameters.isEmpty {
            json.key("parameters")
            writeParameters(response.parameters, into: &json)
        }
        json.key("outputs"); json.beginArray()
        for tensor in response.outputs {
            json.beginObject()
            json.key("name"); json.string(tensor.name)
            json.key("datatype"); json.string(tensor.dataType.protocolName)
            json.key("shape"); json.beginArray()
            for dim in tensor.shape { json.integer(dim) }
            json.endArray()
            if binary.sharedMemory[tensor.name] != nil {
                // Already in the client's region: the entry says only what it holds (as Triton).
            } else if binary.isBinary(tensor.name) {
                anyBinary = true
                json.key("parameters"); json.beginObject()
                json.key("binary_data_size"); json.integer(tensor.data.count)
                json.endObject()
            } else {
                json.key("data")
                try writeData(tensor, into: &json)
            }
            json.endObject()
        }
        json.endArray()
        json.endObject()
        var buffer = json.buffer
        let jsonLength = buffer.readableBytes
        guard anyBinary else { return (buffer, nil) }
        for tensor in response.outputs where binary.isBinary(tensor.name) { buffer.writeData(tensor.data) }
        return (buffer, jsonLength)
    }

    /// Parameters as a JSON object, keys in order. Responses carry a few: they are picked in
    /// order by repeated scans rather than sorted into an array made per response.
    static func writeParameters(_ parameters: [String: InferParameter], into json: inout JSONWriter) {
        func write(_ key: String, _ value: InferParameter) {
            json.dynamicKey(key)
            switch value {
            case .bool(let v): json.bool(v)
            case .int64(let v): json.integer(v)
            case .uint64(let v): json.integer(v)
            case .double(let v): json.number(v)
            case .string(let v): json.string(v)
            }
        }
        json.beginObject()
        if parameters.count == 1, let (key, value) = parameters.first {
            write(key, value)  // an experiment's variant label
        } else if parameters.count == 2 {
            // Two: one comparison.
            let first = parameters.startIndex, second = parameters.index(after: first)
            let (a, b) = parameters[first].key < parameters[second].key ? (first, second) : (second, first)
            write(parameters[a].key, parameters[a].value)
            write(parameters[b].key, parameters[b].value)
        } else if parameters.count > 8 {
            for (key, value) in parameters.sorted(by: { $0.key < $1.key }) { write(key, value) }
        } else {
            var last: String?
            for _ in 0..<parameters.count {
                var next: Dictionary<String, InferParameter>.Index?
                for index in parameters.indices {
                    let key = parameters[index].key
                    if let last, key <= last { continue }
                    if let next, parameters[next].key <= key { continue }
                    next = index
                }
                guard let next else { break }
                write(parameters[next].key, parameters[next].value)
                last = parameters[next].key
            }
        }
        json.endObject()
    }

    /// A tensor's elements as a flat JSON array.
    private static func writeData(_ tensor: Tensor, into json: inout JSONWriter) throws(TernError) {
        json.beginArray()
        switch tensor.dataType {
        case .bool: for byte in tensor.data { json.bool(byte != 0) }
        case .uint8: for v in try tensor.values(as: UInt8.self) { json.integer(v) }
        case .uint16: for v in try tensor.values(as: UInt16.self) { json.integer(v) }
        case .uint32: for v in try tensor.values(as: UInt32.self) { json.integer(v) }
        case .uint64: for v in try tensor.values(as: UInt64.self) { json.integer(v) }
        case .int8: for v in try tensor.values(as: Int8.self) { json.integer(v) }
        case .int16: for v in try tensor.values(as: Int16.self) { json.integer(v) }
        case .int32: for v in try tensor.values(as: Int32.self) { json.integer(v) }
        case .int64: for v in try tensor.values(as: Int64.self) { json.integer(v) }
        case .fp16: for v in try tensor.values(as: Float16.self) { json.number(Float(v)) }
        case .fp32: for v in try tensor.values(as: Float.self) { json.number(v) }
        case .fp64: for v in try tensor.values(as: Double.self) { json.number(v) }
        case .bf16:
            for v in try JSONTensorCodec.unpack(tensor) { json.number((v as? Double) ?? 0) }
        case .bytes:
            for element in try tensor.strings() { json.string(String(decoding: element, as: UTF8.self)) }
        }
        json.endArray()
    }

}

/// Where each output goes: into a shared-memory region the request names, else as binary data
/// (per output `binary_data`, else the request's `binary_data_output`), else as JSON.
struct OutputPolicy {
    var defaultBinary: Bool
    var explicit: [String: Bool] = [:]
    var sharedMemory: [String: SharedMemoryReference] = [:]

    func isBinary(_ name: String) -> Bool { sharedMemory[name] == nil && (explicit[name] ?? defaultBinary) }
}
