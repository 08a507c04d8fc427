import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SwiftProtobuf
import TernClient
import TernCore
import TernRuntime

/// The handlers: each route's answer, and the decoding and encoding of bodies they share.
extension KServeHTTPAPI {
    /// Every route that needs no waiting.
    func answer(_ route: Route, _ request: HTTPRequestData) throws(TernError) -> HTTPReply {
        switch route {
        case .serverMetadata: return try serverMetadata()
        case .live: return .empty(server.isLive ? .ok : .badRequest)
        case .ready: return .empty(server.isReady ? .ok : .badRequest)
        case .allStats: return try statistics(nil, nil)
        case .repositoryIndex:
            let ready = try jsonBody(request)["ready"]?.boolValue ?? false
            return try HTTPReply.json(server.repositoryIndex(readyOnly: ready).map { entry -> [String: Any] in
                var object: [String: Any] = ["name": entry.name]
                if !entry.version.isEmpty { object["version"] = entry.version }
                if !entry.state.isEmpty { object["state"] = entry.state }
                if !entry.reason.isEmpty { object["reason"] = entry.reason }
                return object
            })
        case .unload(let name):
            try server.unload(model: name)
            return .empty(.ok)
        case .model(let name, let version, let action):
            switch action {
            case .metadata: return try modelMetadata(name, version)
            case .ready: return .empty(server.isModelReady(name, version: version) ? .ok : .badRequest)
            case .config: return try modelConfig(name, version)
            case .stats: return try statistics(name, version)
            case .infer: throw .internalError("inference is not answered here")
            }
        case .lifecycleStatus(let name?): return try HTTPReply.encoded(try server.lifecycleStatus(model: name))
        case .lifecycleStatus(nil): return try HTTPReply.encoded(server.lifecycleStatuses())
        case .sharedMemory(let action, let region, let cuda): return try sharedMemory(action, region: region, cuda: cuda, request)
        case .history(let name):
            let limit = Self.queryItem("limit", in: request.path).flatMap { Int($0) } ?? 100
            return try HTTPReply.encoded(server.history.events(model: name, limit: limit))
        case .load, .promote, .rollback: throw .internalError("loading is not answered here")
        }
    }

    // MARK: Handlers

    private func serverMetadata() throws(TernError) -> HTTPReply {
        let metadata = server.serverMetadata
        return try HTTPReply.json(["name": metadata.name, "version": metadata.version, "extensions": metadata.extensions])
    }

    private func modelMetadata(_ name: String, _ version: Int64?) throws(TernError) -> HTTPReply {
        let metadata = try server.modelMetadata(name, version: version)
        func tensors(_ specs: [TensorSpec]) -> [[String: Any]] {
            specs.map { ["name": $0.name, "datatype": $0.dataType.protocolName, "shape": $0.shape.map { NSNumber(value: $0) }] }
        }
        return try HTTPReply.json([
            "name": metadata.name, "versions": metadata.versions, "platform": metadata.platform,
            "inputs": tensors(metadata.inputs), "outputs": tensors(metadata.outputs),
        ])
    }

    private func modelConfig(_ name: String, _ version: Int64?) throws(TernError) -> HTTPReply {
        let config = try server.modelConfig(name, version: version)
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        options.alwaysPrintInt64sAsNumbers = true
        let json: [UInt8]
        do {
            json = try config.jsonUTF8Bytes(options: options)
        } catch {
            throw .internalError("cannot encode the config of '\(name)' as JSON: \(error)")
        }
        // Protobuf JSON leaves out fields at their default; Triton prints them, and clients index
        // e.g. config["max_batch_size"] directly, so the top-level ones are filled in.
        guard var object = (try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any] else {
            throw .internalError("cannot encode the config of '\(name)' as JSON")
        }
        let defaults: [String: Any] = [
            "name": "", "platform": "", "backend": "", "max_batch_size": 0, "input": [Any](), "output": [Any](),
            "instance_group": [Any](), "default_model_filename": "", "parameters": [String: Any](), "model_warmup": [Any](),
        ]
        for (key, value) in defaults where object[key] == nil { object[key] = value }
        return try HTTPReply.json(object)
    }

    private func statistics(_ name: String?, _ version: Int64?) throws(TernError) -> HTTPReply {
        let stats = try server.statistics(model: name, version: version)
        func duration(_ d: StatisticDuration) -> [String: Any] { ["count": NSNumber(value: d.count), "ns": NSNumber(value: d.ns)] }
        let models: [[String: Any]] = stats.map { s in
            [
                "name": s.name, "version": s.version, "last_inference": NSNumber(value: s.lastInference),
                "inference_count": NSNumber(value: s.inferenceCount), "execution_count": NSNumber(value: s.executionCount),
                "inference_stats": [
                    "success": duration(s.success), "fail": duration(s.fail), "queue": duration(s.queue),
                    "compute_input": duration(s.computeInput), "compute_infer": duration(s.computeInfer),
                    "compute_output": duration(s.computeOutput), "cache_hit": duration(.init()), "cache_miss": duration(.init()),
                ],
                "batch_stats": s.batchStats.map { b in
                    [
                        "batch_size": NSNumber(value: b.batchSize), "compute_input": duration(b.computeInput),
                        "compute_infer": duration(b.computeInfer), "compute_output": duration(b.computeOutput),
                    ]
                },
                "memory_usage": [Any](),
            ]
        }
        return try HTTPReply.json(["model_stats": models])
    }

    private func sharedMemory(_ action: SharedMemoryAction, region: String?, cuda: Bool, _ request: HTTPRequestData) throws(TernError) -> HTTPReply {
        let registry = server.sharedMemory
        switch (action, cuda) {
        case (.status, false):
            return try HTTPReply.json(try registry.status(name: region).map { status -> [String: Any] in
                ["name": status.name, "key": status.key, "offset": NSNumber(value: status.offset), "byte_size": NSNumber(value: status.byteSize)]
            })
        case (.register, false):
            let body = try jsonBody(request)
            func field(_ name: String) throws(TernError) -> JSONValue {
                guard let value = body[name] else { throw .invalidArgument("Shared memory register request has no '\(name)' field") }
                return value
            }
            guard let key = try field("key").stringValue else { throw .invalidArgument("Shared memory register request: 'key' must be a string") }
            guard let size = try field("byte_size").numberValue?.uint else {
                throw .invalidArgument("Shared memory register request: 'byte_size' must be a non-negative integer")
            }
            var offset: UInt64 = 0
            if let value = body["offset"] {
                guard let number = value.numberValue?.uint else {
                    throw .invalidArgument("Shared memory register request: 'offset' must be a non-negative integer")
                }
                offset = number
            }
            try registry.register(name: region ?? "", key: key, offset: offset, byteSize: size)
            return .empty(.ok)
        case (.unregister, false):
            registry.unregister(name: region)
            return .empty(.ok)
        case (.status, true):
            return try HTTPReply.json(try registry.cudaStatus(name: region).map { status -> [String: Any] in
                ["name": status.name, "device_id": NSNumber(value: status.deviceID), "byte_size": NSNumber(value: status.byteSize)]
            })
        case (.register, true):
            let body = try jsonBody(request)
            func field(_ name: String) throws(TernError) -> JSONValue {
                guard let value = body[name] else { throw .invalidArgument("CUDA shared memory register request has no '\(name)' field") }
                return value
            }
            // {"raw_handle": {"b64": "<base64 of the 64-byte cudaIpcMemHandle_t>"}, "device_id": 0, "byte_size": N}
            guard let text = try field("raw_handle")["b64"]?.stringValue else {
                throw .invalidArgument("CUDA shared memory register request: 'raw_handle' must be {\"b64\": \"<base64>\"}")
            }
            guard let handle = Data(base64Encoded: text) else {
                throw .invalidArgument("CUDA shared memory register request: 'raw_handle' is not valid base64")
            }
            guard let device = try field("device_id").numberValue?.uint, device <= UInt64(Int64.max) else {
                throw .invalidArgument("CUDA shared memory register request: 'device_id' must be a non-negative integer")
            }
            guard let size = try field("byte_size").numberValue?.uint else {
                throw .invalidArgument("CUDA shared memory register request: 'byte_size' must be a non-negative integer")
            }
            try registry.registerCUDA(name: region ?? "", handle: handle, deviceID: Int64(device), byteSize: size)
            return .empty(.ok)
        case (.unregister, true):
            registry.unregisterCUDA(name: region)
            return .empty(.ok)
        }
    }

    func decodeInfer(_ request: HTTPRequestData, name: String, version: Int64?) throws(TernError) -> (InferenceRequest, OutputPolicy) {
        var headerLength: Int? = nil
        if let value = request.headers.first(name: "Inference-Header-Content-Length") {
            guard let length = Int(value), length >= 0 else {
                throw .invalidArgument("Inference-Header-Content-Length must be a non-negative integer, not '\(value)'")
            }
            headerLength = length
        }
        var decoded = try InferHTTPCodec.decodeRequest(
            body: request.body, headerLength: headerLength, model: name, version: version, sharedMemory: server.sharedMemory,
            maxTensorBytes: maxRequestSize)
        if let pattern = headerForwardPattern {
            for (header, value) in request.headers {
                let range = NSRange(header.startIndex..., in: header)
                if pattern.firstMatch(in: header, range: range).map({ $0.range == range }) == true {
                    decoded.0.parameters[header.lowercased()] = .string(value)
                }
            }
        }
        return decoded
    }

    func encode(_ response: InferenceResponse, binary: OutputPolicy) throws(TernError) -> HTTPReply {
        if !binary.sharedMemory.isEmpty { try server.sharedMemory.write(outputsOf: response, placements: binary.sharedMemory) }
        let (buffer, jsonLength) = try InferHTTPCodec.encodeResponse(response, binary: binary, allocator: ByteBufferAllocator())
        if let jsonLength {
            return HTTPReply(status: .ok, headers: [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", String(jsonLength))], body: buffer)
        }
        return HTTPReply(status: .ok, headers: [("Content-Type", "application/json")], body: buffer)
    }

    /// The value of `name` in the path's query string.
    static func queryItem(_ name: String, in path: String) -> String? {
        guard let query = path.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == name { return String(parts[1]) }
        }
        return nil
    }

    func jsonBody(_ request: HTTPRequestData) throws(TernError) -> JSONValue {
        guard request.body.readableBytes > 0 else { return .object([:]) }
        let value = try request.body.withUnsafeReadableBytes { raw throws(TernError) in try JSONParser.parse(raw) }
        guard value.objectValue != nil else { throw .invalidArgument("the request body must be a JSON object") }
        return value
    }
}
