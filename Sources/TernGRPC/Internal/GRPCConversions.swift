import Foundation
import TernClient
import TernCore
import TernRuntime

enum GRPCConversions {
    static func parameters(_ map: [String: Inference_InferParameter]) -> [String: InferParameter] {
        map.compactMapValues { parameter in
            switch parameter.parameterChoice {
            case .boolParam(let v): .bool(v)
            case .int64Param(let v): .int64(v)
            case .uint64Param(let v): .uint64(v)
            case .doubleParam(let v): .double(v)
            case .stringParam(let v): .string(v)
            case nil: nil
            }
        }
    }

    static func version(_ text: String) throws(TernError) -> Int64? {
        guard !text.isEmpty else { return nil }
        guard let version = Int64(text), version > 0 else {
            throw .invalidArgument("model version must be a positive integer, not '\(text)'")
        }
        return version
    }

    /// A ModelInferRequest as an engine request. Raw contents are used as they are (no copy), and
    /// inputs in shared memory are viewed where they lie. `raw_input_contents` holds one entry per
    /// input that is not in shared memory, in order (as tritonclient sends them).
    static func request(
        _ message: Inference_ModelInferRequest, sharedMemory: SharedMemoryRegistry? = nil, maxTensorBytes: Int = .max
    ) throws(TernError) -> InferenceRequest {
        let raw = message.rawInputContents
        var places: [SharedMemoryReference?] = []
        places.reserveCapacity(message.inputs.count)
        for input in message.inputs {
            let parameters = input.parameters.isEmpty ? [:] : parameters(input.parameters)
            places.append(try SharedMemoryReference(parameters: parameters, context: "input '\(input.name)'"))
        }
        let inline = places.count { $0 == nil }
        if !raw.isEmpty, raw.count != inline {
            throw .invalidArgument(
                "raw_input_contents has \(raw.count) entries but the request has \(inline) inputs not in shared memory")
        }
        var inputs: [Tensor] = []
        inputs.reserveCapacity(message.inputs.count)
        var rawIndex = 0
        for (index, input) in message.inputs.enumerated() {
            guard let type = DataType(protocolName: input.datatype) else {
                throw .invalidArgument("input '\(input.name)': unknown datatype '\(input.datatype)'")
            }
            if let negative = input.shape.first(where: { $0 < 0 }) {
                throw .invalidArgument("input '\(input.name)': shape has a negative dimension \(negative)")
            }
            try Tensor.checkDeclared(shape: input.shape, type: type, name: input.name, limit: places[index] == nil ? maxTensorBytes : .max)
            let data: Data
            if let place = places[index] {
                guard let sharedMemory else { throw .invalidArgument("input '\(input.name)': shared memory is not available here") }
                if input.hasContents {
                    throw .invalidArgument("input '\(input.name)' must set only one of 'contents' and 'shared_memory_region' in 'parameters'")
                }
                data = try sharedMemory.inputData(place)
            } else if raw.isEmpty {
                data = try typedContents(input.contents, type: type, name: input.name)
            } else {
                data = raw[rawIndex]
                rawIndex += 1
            }
            inputs.append(Tensor(name: input.name, dataType: type, shape: input.shape, data: data))
        }
        let outputs = message.outputs.map { output in
            let parameters = self.parameters(output.parameters)
            return RequestedOutput(
                name: output.name, classificationCount: Int(parameters["classification"]?.integerValue ?? 0),
                parameters: parameters)
        }
        return InferenceRequest(
            modelName: message.modelName, modelVersion: try version(message.modelVersion), id: message.id,
            parameters: parameters(message.parameters), inputs: inputs, outputs: outputs)
    }

    private static func typedContents(_ contents: Inference_InferTensorContents, type: DataType, name: String) throws(TernError) -> Data {
        func pack<T>(_ values: [T]) -> Data { values.withUnsafeBytes { Data($0) } }
        func narrow<S: BinaryInteger, T: BinaryInteger>(_ values: [S], _: T.Type) throws(TernError) -> Data {
            var out: [T] = []
            out.reserveCapacity(values.count)
            for value in values {
                guard let v = T(exactly: value) else { throw .invalidArgument("input '\(name)': \(value) does not fit \(type.protocolName)") }
                out.append(v)
            }
            return pack(out)
        }
        switch type {
        case .bool: return Data(contents.boolContents.map { $0 ? 1 : 0 })
        case .int8: return try narrow(contents.intContents, Int8.self)
        case .int16: return try narrow(contents.intContents, Int16.self)
        case .int32: return pack(contents.intContents)
        case .int64: return pack(contents.int64Contents)
        case .uint8: return try narrow(contents.uintContents, UInt8.self)
        case .uint16: return try narrow(contents.uintContents, UInt16.self)
        case .uint32: return pack(contents.uintContents)
        case .uint64: return pack(contents.uint64Contents)
        case .fp32: return pack(contents.fp32Contents)
        case .fp64: return pack(contents.fp64Contents)
        case .bytes: return BytesCodec.encode(contents.bytesContents)
        case .fp16, .bf16:
            throw .invalidArgument("input '\(name)': \(type.protocolName) data must be sent in raw_input_contents")
        }
    }

    /// An engine response as a ModelInferResponse, outputs in `raw_output_contents` (an empty entry
    /// for those already written to shared memory, so entries and outputs keep the same order).
    static func response(_ response: InferenceResponse, inSharedMemory: [String: SharedMemoryReference] = [:]) -> Inference_ModelInferResponse {
        var message = Inference_ModelInferResponse()
        message.modelName = response.modelName
        message.modelVersion = String(response.modelVersion)
        message.id = response.id
        if !response.parameters.isEmpty { message.parameters = KServeGRPCCodec.protocolParameters(response.parameters) }
        message.outputs = response.outputs.map { tensor in
            var output = Inference_ModelInferResponse.InferOutputTensor()
            output.name = tensor.name
            output.datatype = tensor.dataType.protocolName
            output.shape = tensor.shape
            return output
        }
        message.rawOutputContents = response.outputs.map { inSharedMemory[$0.name] == nil ? $0.data : Data() }
        return message
    }

    static func statistics(_ stats: ModelStatistics) -> Inference_ModelStatistics {
        func duration(_ d: StatisticDuration) -> Inference_StatisticDuration {
            var out = Inference_StatisticDuration()
            out.count = d.count
            out.ns = d.ns
            return out
        }
        var message = Inference_ModelStatistics()
        message.name = stats.name
        message.version = stats.version
        message.lastInference = stats.lastInference
        message.inferenceCount = stats.inferenceCount
        message.executionCount = stats.executionCount
        message.inferenceStats.success = duration(stats.success)
        message.inferenceStats.fail = duration(stats.fail)
        message.inferenceStats.queue = duration(stats.queue)
        message.inferenceStats.computeInput = duration(stats.computeInput)
        message.inferenceStats.computeInfer = duration(stats.computeInfer)
        message.inferenceStats.computeOutput = duration(stats.computeOutput)
        message.inferenceStats.cacheHit = duration(.init())
        message.inferenceStats.cacheMiss = duration(.init())
        message.batchStats = stats.batchStats.map { batch in
            var out = Inference_InferBatchStatistics()
            out.batchSize = batch.batchSize
            out.computeInput = duration(batch.computeInput)
            out.computeInfer = duration(batch.computeInfer)
            out.computeOutput = duration(batch.computeOutput)
            return out
        }
        return message
    }
}
