import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SwiftProtobuf
import TernClient
import TernCore
import TernRuntime

/// The KServe v2 REST API with Triton's extensions. Each handler decodes, calls the engine and
/// encodes; no logic lives here. Everything but model loading and inference of slow or busy
/// models is answered synchronously, on the event loop that read the request.
struct KServeHTTPAPI: HTTPResponder {
    let server: InferenceServer
    var extensions: [HTTPExtensionRoutes] = []
    /// Request headers whose names match are passed to the model as request parameters (lowercased
    /// names), as Triton's `--http-header-forward-pattern` does.
    var headerForwardPattern: NSRegularExpression? = nil
    /// The restricted API groups and their keys (`--http-restricted-api`).
    var access: APIAccessPolicy = .open
    /// The largest body taken (`--max-request-size`): no shape sent in a request may declare more.
    var maxRequestSize = Int.max

    init(server: InferenceServer, extensions: [HTTPExtensionRoutes] = [], access: APIAccessPolicy = .open) {
        self.server = server
        self.extensions = extensions
        self.access = access
    }

    private enum Route {
        case serverMetadata, live, ready, allStats, repositoryIndex
        case model(String, Int64?, ModelAction)
        case load(String), unload(String)
        /// Tern's lifecycle extension: hot-swap with gates, rollback, status and history.
        case promote(String), rollback(String), lifecycleStatus(String?), history(String?)
        /// The shared-memory extensions: system regions, and CUDA ones (refused: no CUDA memory here).
        case sharedMemory(SharedMemoryAction, region: String?, cuda: Bool)
    }
    private enum SharedMemoryAction { case status, register, unregister }
    private enum ModelAction { case metadata, ready, config, stats, infer }

    func answer(_ request: HTTPRequestData) -> HTTPAnswer {
        if !extensions.isEmpty, let (routes, rest) = HTTPExtensionRoutes.match(extensions, path: request.path) {
            for group in routes.groups(method: request.method.rawValue, rest: rest) {
                if let refusal = access.refusal(group: group, header: { request.headers.first(name: $0) }) { return .now(.error(refusal)) }
            }
            let groups = routes.groups(method: request.method.rawValue, rest: rest)
            return HTTPExtensionRoutes.answer(routes, rest: rest, request: request, by: actor(request, groups: groups))
        }
        do throws(TernError) {
            let route: Route
            do throws(TernError) {
                route = try self.route(request, method: request.method)
            } catch where error.code == .notFound {
                // A path served for another method: 405 with the methods it takes.
                let allowed = [HTTPMethod.GET, .POST].filter { $0 != request.method && (try? self.route(request, method: $0)) != nil }
                if !allowed.isEmpty { return .now(.methodNotAllowed(allow: allowed.map(\.rawValue).joined(separator: ", "))) }
                throw error
            }
            let group = Self.group(of: route)
            if let refusal = access.refusal(group: group, header: { request.headers.first(name: $0) }) {
                return .now(.error(refusal))
            }
            let by = actor(request, groups: [group])
            switch route {
            case .model(let name, let version, .infer):
                let (inferenceRequest, binary) = try decodeInfer(request, name: name, version: version)
                // Answered on this thread when the engine runs it inline (see Answer.run).
                return .callback { [self] reply in
                    server.submit(inferenceRequest) { result in
                        do throws(TernError) {
                            reply(try encode(try result.get(), binary: binary))
                        } catch {
                            reply(.error(error))
                        }
                    }
                }
            case .load(let name):
                let body = try jsonBody(request)
                let parameters = try InferHTTPCodec.decodeParameters(body["parameters"], context: "load request")
                let config = parameters["config"]?.stringValue
                var files: [String: Data] = [:]
                for (key, value) in parameters where key.hasPrefix("file:") {
                    guard let text = value.stringValue, let data = Data(base64Encoded: text) else {
                        throw TernError.invalidArgument("load parameter '\(key)' must be base64-encoded file content")
                    }
                    files[key] = data
                }
                for key in parameters.keys where key != "config" && !key.hasPrefix("file:") {
                    throw TernError.invalidArgument("unexpected load parameter '\(key)'")
                }
                let content = files
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            try await server.load(model: name, configJSON: config, files: content)
                            return .empty(.ok)
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case .promote(let name):
                let body = try jsonBody(request)
                var version: Int64? = nil
                if let value = body["version"] {
                    guard let number = value.numberValue?.int, number > 0 else {
                        throw TernError.invalidArgument("promote: 'version' must be a positive integer")
                    }
                    version = number
                }
                let chosen = version
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            return try HTTPReply.encoded(try await server.promote(model: name, version: chosen))
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case .rollback(let name):
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            return try HTTPReply.encoded(try await server.rollback(model: name))
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case let route:
                let reply = LifecycleEvent.$requestedBy.withValue(by) { Result { () throws(TernError) in try answer(route, request) } }
                return .now(try reply.get())
            }
        } catch {
            return .now(.error(error))
        }
    }

    /// Who a control request is recorded as coming from: the client's address (and certificate
    /// name), and the name of the key that opened its restricted groups.
    private func actor(_ request: HTTPRequestData, groups: [String]) -> String {
        let keys = groups.compactMap { access.keyName(for: $0) }
        return keys.isEmpty ? request.peer : "\(request.peer), key \(keys.joined(separator: "+"))"
    }

    /// The API group a route belongs to (Triton's grouping; Tern's lifecycle extension apart).
    private static func group(of route: Route) -> String {
        switch route {
        case .live, .ready: "health"
        case .serverMetadata: "metadata"
        case .allStats: "statistics"
        case .repositoryIndex, .load, .unload: "model-repository"
        case .promote, .rollback, .lifecycleStatus, .history: "lifecycle"
        case .sharedMemory: "shared-memory"
        case .model(_, _, let action):
            switch action {
            case .metadata: "metadata"
            case .ready: "health"
            case .config: "model-config"
            case .stats: "statistics"
            case .infer: "inference"
            }
        }
    }

    private func route(_ request: HTTPRequestData, method: HTTPMethod) throws(TernError) -> Route {
        let path = request.path.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(request.path[..<$0]) } ?? request.path
        let parts = path.utf8.split(separator: UInt8(ascii: "/")).map { component in
            // Foundation's percent decoding is slow; most paths have nothing to decode.
            let text = String(Substring(component))
            return component.contains(UInt8(ascii: "%")) ? (text.removingPercentEncoding ?? text) : text
        }
        let get = method == .GET, post = method == .POST
        func fail() -> TernError { TernError(.notFound, "no route for \(method.rawValue) \(path)") }
        guard parts.first == "v2" else { throw fail() }
        switch (parts.count, get, post) {
        case (1, true, _): return .serverMetadata
        case (3, true, _) where parts[1] == "health" && parts[2] == "live": return .live
        case (3, true, _) where parts[1] == "health" && parts[2] == "ready": return .ready
        case (3, true, _) where parts[1] == "models" && parts[2] == "stats": return .allStats
        case (3, _, true) where parts[1] == "repository" && parts[2] == "index": return .repositoryIndex
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "load": return .load(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "unload": return .unload(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "promote": return .promote(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "rollback": return .rollback(parts[3])
        case (5, true, _) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "status": return .lifecycleStatus(parts[3])
        case (5, true, _) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "history": return .history(parts[3])
        case (3, true, _) where parts[1] == "repository" && parts[2] == "history": return .history(nil)
        case (3, true, _) where parts[1] == "repository" && parts[2] == "status": return .lifecycleStatus(nil)
        default: break
        }
        if parts.count >= 3, parts[1] == "systemsharedmemory" || parts[1] == "cudasharedmemory" {
            let cuda = parts[1] == "cudasharedmemory"
            switch (parts.count, parts[parts.count - 1], get, post) {
            case (3, "status", true, _): return .sharedMemory(.status, region: nil, cuda: cuda)
            case (3, "unregister", _, true): return .sharedMemory(.unregister, region: nil, cuda: cuda)
            case (5, "status", true, _) where parts[2] == "region": return .sharedMemory(.status, region: parts[3], cuda: cuda)
            case (5, "register", _, true) where parts[2] == "region": return .sharedMemory(.register, region: parts[3], cuda: cuda)
            case (5, "unregister", _, true) where parts[2] == "region": return .sharedMemory(.unregister, region: parts[3], cuda: cuda)
            default: throw fail()
            }
        }
        guard parts.count >= 3, parts[1] == "models" else { throw fail() }
        let name = parts[2]
        var rest = parts[3...]
        var version: Int64? = nil
        if rest.first == "versions" {
            guard rest.count >= 2 else { throw fail() }
            let text = rest[rest.startIndex + 1]
            guard let number = Int64(text), number > 0 else {
                throw .invalidArgument("model version must be a positive integer, not '\(text)'")
            }
            version = number
            rest = rest.dropFirst(2)
        }
        let action: ModelAction
        switch (rest.first, rest.count, get, post) {
        case (nil, 0, true, _): action = .metadata
        case ("ready", 1, true, _): action = .ready
        case ("config", 1, true, _): action = .config
        case ("stats", 1, true, _): action = .stats
        case ("infer", 1, _, true): action = .infer
        default: throw fail()
        }
        return .model(name, version, action)
    }

    /// Every route that needs no waiting.
    private func answer(_ route: Route, _ request: HTTPRequestData) throws(TernError) -> HTTPReply {
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
            if let region { throw .notFound("Unable to find cuda shared memory region: '\(region)'") }
            return try HTTPReply.json([Any]())
        case (.register, true):
            throw TernError(.unimplemented, SharedMemoryRegistry.cudaRefusal)
        case (.unregister, true):
            return .empty(.ok)
        }
    }

    private func decodeInfer(_ request: HTTPRequestData, name: String, version: Int64?) throws(TernError) -> (InferenceRequest, OutputPolicy) {
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

    private func encode(_ response: InferenceResponse, binary: OutputPolicy) throws(TernError) -> HTTPReply {
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

    private func jsonBody(_ request: HTTPRequestData) throws(TernError) -> JSONValue {
        guard request.body.readableBytes > 0 else { return .object([:]) }
        let value = try request.body.withUnsafeReadableBytes { raw throws(TernError) in try JSONParser.parse(raw) }
        guard value.objectValue != nil else { throw .invalidArgument("the request body must be a JSON object") }
        return value
    }
}
