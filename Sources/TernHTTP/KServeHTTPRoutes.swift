import Foundation
import Hummingbird
import NIOCore
import NIOFoundationCompat
import SwiftProtobuf
import TernCore
import TernRuntime

/// The KServe v2 REST API with Triton's extensions, on a Hummingbird router. Each route decodes,
/// calls the engine and encodes; no logic lives here.
public struct KServeHTTPRoutes: Sendable {
    public let server: InferenceServer
    /// Largest request body accepted, in bytes.
    public let maxBodySize: Int

    public init(server: InferenceServer, maxBodySize: Int = 256 << 20) {
        self.server = server
        self.maxBodySize = maxBodySize
    }

    /// Adds the routes to `router`.
    public func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/v2") { _, _ in try self.serverMetadata() }
        router.get("/v2/health/live") { _, _ in Response.empty(self.server.isLive ? .ok : .badRequest) }
        router.get("/v2/health/ready") { _, _ in Response.empty(self.server.isReady ? .ok : .badRequest) }
        for prefix in ["/v2/models/:model", "/v2/models/:model/versions/:version"] {
            router.get(RouterPath(prefix)) { _, context in try self.handle(context) { (n: String, v: Int64?) throws(TernError) in try self.modelMetadata(n, v) } }
            router.get(RouterPath(prefix + "/ready")) { _, context in try self.handle(context) { name, version in
                Response.empty(self.server.isModelReady(name, version: version) ? .ok : .badRequest)
            } }
            router.get(RouterPath(prefix + "/config")) { _, context in try self.handle(context) { (n: String, v: Int64?) throws(TernError) in try self.modelConfig(n, v) } }
            router.get(RouterPath(prefix + "/stats")) { _, context in try self.handle(context) { (n: String, v: Int64?) throws(TernError) in try self.statistics(n, v) } }
            router.post(RouterPath(prefix + "/infer")) { request, context in
                do {
                    let (name, version) = try Self.model(context)
                    return try await self.infer(request, name: name, version: version, context: context)
                } catch let error as TernError {
                    return Response.error(error)
                }
            }
        }
        router.get("/v2/models/stats") { _, _ in
            do { return try self.statistics(nil, nil) } catch let error as TernError { return Response.error(error) }
        }
        router.post("/v2/repository/index") { request, context in
            await self.catching {
                var request = request
                let body = try await self.jsonBody(&request, context)
                let ready = body["ready"]?.boolValue ?? false
                return try Response.json(self.server.repositoryIndex(readyOnly: ready).map { entry -> [String: Any] in
                    var object: [String: Any] = ["name": entry.name]
                    if !entry.version.isEmpty { object["version"] = entry.version }
                    if !entry.state.isEmpty { object["state"] = entry.state }
                    if !entry.reason.isEmpty { object["reason"] = entry.reason }
                    return object
                })
            }
        }
        router.post("/v2/repository/models/:model/load") { request, context in
            await self.catching {
                var request = request
                let name = try context.parameters.require("model")
                let body = try await self.jsonBody(&request, context)
                let parameters = try InferHTTPCodec.decodeParameters(body["parameters"], context: "load request")
                try await self.server.load(model: name, configJSON: parameters["config"]?.stringValue)
                return Response.empty(.ok)
            }
        }
        router.post("/v2/repository/models/:model/unload") { request, context in
            await self.catching {
                let name = try context.parameters.require("model")
                try self.server.unload(model: name)
                return Response.empty(.ok)
            }
        }
    }

    // MARK: Handlers

    private func serverMetadata() throws -> Response {
        let metadata = server.serverMetadata
        return try Response.json(["name": metadata.name, "version": metadata.version, "extensions": metadata.extensions])
    }

    private func modelMetadata(_ name: String, _ version: Int64?) throws(TernError) -> Response {
        let metadata = try server.modelMetadata(name, version: version)
        func tensors(_ specs: [TensorSpec]) -> [[String: Any]] {
            specs.map { ["name": $0.name, "datatype": $0.dataType.protocolName, "shape": $0.shape.map { NSNumber(value: $0) }] }
        }
        return try Response.json([
            "name": metadata.name, "versions": metadata.versions, "platform": metadata.platform,
            "inputs": tensors(metadata.inputs), "outputs": tensors(metadata.outputs),
        ])
    }

    private func modelConfig(_ name: String, _ version: Int64?) throws(TernError) -> Response {
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
        return try Response.json(object)
    }

    private func statistics(_ name: String?, _ version: Int64?) throws(TernError) -> Response {
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
        return try Response.json(["model_stats": models])
    }

    private func infer<Context: RequestContext>(
        _ request: Request, name: String, version: Int64?, context: Context
    ) async throws(TernError) -> Response {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: maxBodySize)
        } catch {
            throw .invalidArgument("request body larger than the limit of \(maxBodySize) bytes, or unreadable")
        }
        var headerLength: Int? = nil
        if let value = request.headers[.inferenceHeaderContentLength] {
            guard let length = Int(value), length >= 0 else {
                throw .invalidArgument("Inference-Header-Content-Length must be a non-negative integer, not '\(value)'")
            }
            headerLength = length
        }
        let (inferenceRequest, binary) = try InferHTTPCodec.decodeRequest(
            body: body, headerLength: headerLength, model: name, version: version)
        let response = try await server.infer(inferenceRequest)
        let (buffer, jsonLength) = try InferHTTPCodec.encodeResponse(response, binary: binary, allocator: ByteBufferAllocator())
        var headers: HTTPFields = [:]
        if let jsonLength {
            headers[.contentType] = "application/octet-stream"
            headers[.inferenceHeaderContentLength] = String(jsonLength)
        } else {
            headers[.contentType] = "application/json"
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: buffer))
    }

    // MARK: Helpers

    private func handle<Context: RequestContext>(
        _ context: Context, _ body: (String, Int64?) throws(TernError) -> Response
    ) throws -> Response {
        do {
            let (name, version) = try Self.model(context)
            return try body(name, version)
        } catch {
            return Response.error(error)
        }
    }

    private func catching(_ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let error as TernError {
            return Response.error(error)
        } catch {
            return Response.error(.invalidArgument("\(error)"))
        }
    }

    private func jsonBody<Context: RequestContext>(_ request: inout Request, _ context: Context) async throws -> JSONValue {
        let buffer = try await request.collectBody(upTo: maxBodySize)
        guard buffer.readableBytes > 0 else { return .object([:]) }
        let value = try buffer.withUnsafeReadableBytes { raw throws(TernError) in try JSONParser.parse(raw) }
        guard value.objectValue != nil else { throw TernError.invalidArgument("the request body must be a JSON object") }
        return value
    }

    static func model<Context: RequestContext>(_ context: Context) throws(TernError) -> (String, Int64?) {
        guard let name = context.parameters.get("model") else { throw .invalidArgument("no model name in the path") }
        guard let text = context.parameters.get("version"), !text.isEmpty else { return (name, nil) }
        guard let version = Int64(text), version > 0 else {
            throw .invalidArgument("model version must be a positive integer, not '\(text)'")
        }
        return (name, version)
    }
}
