import Foundation
import NIOHPACK
import NIOCore
import SwiftProtobuf
import TernClient
import TernCore
import TernRuntime

/// gRPC's status codes (the numbers the `grpc-status` trailer carries).
enum GRPCCode: Int, Sendable {
    case ok = 0, cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists, permissionDenied
    case resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented, `internal`, unavailable, dataLoss
    case unauthenticated

    /// The code a `TernError` becomes, Triton's mapping (one place for every gRPC service here).
    init(_ code: TernError.Code) {
        switch code {
        case .invalidArgument: self = .invalidArgument
        case .notFound: self = .notFound
        case .alreadyExists: self = .alreadyExists
        case .failedPrecondition: self = .failedPrecondition
        case .unimplemented: self = .unimplemented
        case .permissionDenied: self = .permissionDenied
        case .unavailable: self = .unavailable
        default: self = .internal
        }
    }
}

/// A gRPC call's final status.
struct GRPCStatus: Error, Sendable {
    var code: GRPCCode
    var message: String

    static let ok = GRPCStatus(code: .ok, message: "")

    init(code: GRPCCode, message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: TernError) {
        self.message = error.message
        self.code = GRPCCode(error.code)
    }
}

/// A unary call's outcome: ready now, or work that must wait (it runs off the event loop).
typealias GRPCAnswer = Answer<Result<[UInt8], GRPCStatus>>

/// The `inference.GRPCInferenceService` methods over the engine, on serialized messages. Unary
/// methods answer synchronously where they can (everything but loading, and inference of slow or
/// busy models), so the HTTP/2 stream handler can reply without leaving the event loop.
struct KServeGRPCDispatcher: Sendable {
    let server: InferenceServer
    /// Metadata keys matching it reach the model as request parameters (Triton's
    /// `--grpc-header-forward-pattern`).
    var headerForwardPattern: NSRegularExpression? = nil
    /// Further services, by path prefix (`/package.Service/`).
    var extensions: [String: GRPCExtensionService] = [:]
    /// The restricted API groups (`--grpc-restricted-protocol`; metadata `triton-grpc-protocol-<key>`).
    var access: APIAccessPolicy = .open
    /// The largest message taken (`--max-request-size`): no shape sent in a message may declare more.
    var maxMessageSize = Int.max

    init(server: InferenceServer, access: APIAccessPolicy = .open) {
        self.server = server
        self.access = access
        self.access.headerWord = "metadata"
    }

    /// The API group of a KServe method (Triton's grouping).
    static func group(ofMethod method: String) -> String {
        switch method {
        case "ServerLive", "ServerReady", "ModelReady": "health"
        case "ServerMetadata", "ModelMetadata": "metadata"
        case "ModelInfer", "ModelStreamInfer": "inference"
        case "ModelConfig": "model-config"
        case "ModelStatistics": "statistics"
        case "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload": "model-repository"
        case "TraceSetting": "trace"
        case "LogSettings": "logging"
        default: method.hasSuffix("SharedMemoryStatus") || method.hasSuffix("SharedMemoryRegister") || method.hasSuffix("SharedMemoryUnregister")
            ? "shared-memory" : "inference"
        }
    }

    /// Why a call is refused before it runs (its group restricted and the key missing), or nil.
    func refusal(method: String, extension service: GRPCExtensionService?, headers: HPACKHeaders) -> GRPCStatus? {
        guard !access.restrictions.isEmpty else { return nil }
        let groups = service.map { [$0.group] + $0.alsoRequire(method) } ?? [Self.group(ofMethod: method)]
        for group in groups {
            if let refusal = access.refusal(group: group, header: { headers.first(name: $0) }) { return GRPCStatus(refusal) }
        }
        return nil
    }

    /// The extension service and method a call's path names, if any.
    func extensionMethod(_ path: String) -> (GRPCExtensionService, String)? {
        guard path.hasPrefix("/"), let slash = path.dropFirst().firstIndex(of: "/") else { return nil }
        guard let service = extensions[String(path[...slash])] else { return nil }
        return (service, String(path[path.index(after: slash)...]))
    }

    /// An extension service's unary call, off the event loop.
    func answer(extension service: GRPCExtensionService, method: String, message: ByteBuffer, by: String = "") -> GRPCAnswer {
        let bytes = Data(message.readableBytesView)
        return .later {
            await LifecycleEvent.$requestedBy.withValue(by) {
                do throws(TernError) {
                    return .success(Array(try await service.handle(method, bytes)))
                } catch {
                    return .failure(GRPCStatus(error))
                }
            }
        }
    }

    /// The call's metadata entries to pass to the model as parameters (lowercased keys).
    func forwardedHeaders(_ headers: HPACKHeaders) -> [(String, String)] {
        guard let pattern = headerForwardPattern else { return [] }
        return headers.compactMap { name, value, _ in
            guard !name.hasPrefix(":") else { return nil }
            let range = NSRange(name.startIndex..., in: name)
            return pattern.firstMatch(in: name, range: range).map { $0.range == range } == true ? (name.lowercased(), value) : nil
        }
    }

    static let servicePrefix = "/inference.GRPCInferenceService/"
    static let streamMethod = "ModelStreamInfer"

    /// Decodes the request once and answers it now, or returns the work that must wait.
    /// `inline: false` keeps model executions off the calling thread (the connection's event loop
    /// has other calls to read).
    /// `by` names the caller in the lifecycle history of the changes the call makes.
    func answer(method: String, message: ByteBuffer, inline: Bool = true, forwarded: [(String, String)] = [], by: String = "") -> GRPCAnswer {
        do {
            return try answerOrThrow(method: method, message: message, inline: inline, forwarded: forwarded, by: by)
        } catch {
            return .now(.failure(GRPCStatus(error)))
        }
    }

    /// Who a call is recorded as coming from: the peer, and the key that opened its groups.
    func actor(method: String, extension service: GRPCExtensionService?, peer: String) -> String {
        let groups = service.map { [$0.group] + $0.alsoRequire(method) } ?? [Self.group(ofMethod: method)]
        let keys = groups.compactMap { access.keyName(for: $0) }
        return keys.isEmpty ? peer : "\(peer), key \(keys.joined(separator: "+"))"
    }

    private func answerOrThrow(
        method: String, message: ByteBuffer, inline: Bool, forwarded: [(String, String)], by: String
    ) throws(TernError) -> GRPCAnswer {
        func now(_ bytes: [UInt8]) -> GRPCAnswer { .now(.success(bytes)) }
        switch method {
        case "ServerLive":
            _ = try decode(Inference_ServerLiveRequest.self, message)
            return now(try encode(Inference_ServerLiveResponse.with { $0.live = server.isLive }))
        case "ServerReady":
            _ = try decode(Inference_ServerReadyRequest.self, message)
            return now(try encode(Inference_ServerReadyResponse.with { $0.ready = server.isReady }))
        case "ModelReady":
            let request = try decode(Inference_ModelReadyRequest.self, message)
            let version = try GRPCConversions.version(request.version)
            return now(try encode(Inference_ModelReadyResponse.with { $0.ready = server.isModelReady(request.name, version: version) }))
        case "ServerMetadata":
            _ = try decode(Inference_ServerMetadataRequest.self, message)
            let metadata = server.serverMetadata
            return now(try encode(Inference_ServerMetadataResponse.with {
                $0.name = metadata.name
                $0.version = metadata.version
                $0.extensions = metadata.extensions
            }))
        case "ModelMetadata":
            let request = try decode(Inference_ModelMetadataRequest.self, message)
            let metadata = try server.modelMetadata(request.name, version: try GRPCConversions.version(request.version))
            return now(try encode(GRPCConversions.metadata(metadata)))
        case "ModelConfig":
            let request = try decode(Inference_ModelConfigRequest.self, message)
            let config = try server.modelConfig(request.name, version: try GRPCConversions.version(request.version))
            return now(try encode(Inference_ModelConfigResponse.with { $0.config = config }))
        case "ModelStatistics":
            let request = try decode(Inference_ModelStatisticsRequest.self, message)
            let stats = try server.statistics(
                model: request.name.isEmpty ? nil : request.name, version: try GRPCConversions.version(request.version))
            return now(try encode(Inference_ModelStatisticsResponse.with { $0.modelStats = stats.map(GRPCConversions.statistics) }))
        case "RepositoryIndex":
            let request = try decode(Inference_RepositoryIndexRequest.self, message)
            return now(try encode(Inference_RepositoryIndexResponse.with {
                $0.models = server.repositoryIndex(readyOnly: request.ready).map { entry in
                    .with { $0.name = entry.name; $0.version = entry.version; $0.state = entry.state; $0.reason = entry.reason }
                }
            }))
        case "RepositoryModelUnload":
            let request = try decode(Inference_RepositoryModelUnloadRequest.self, message)
            try LifecycleEvent.$requestedBy.withValue(by) { Result { () throws(TernError) in try server.unload(model: request.modelName) } }.get()
            return now(try encode(Inference_RepositoryModelUnloadResponse()))
        case "ModelInfer":
            var decoded = try GRPCConversions.request(
                try decode(Inference_ModelInferRequest.self, message), sharedMemory: server.sharedMemory, maxTensorBytes: maxMessageSize)
            for (name, value) in forwarded { decoded.parameters[name] = .string(value) }
            let request = decoded
            let placements = try SharedMemoryReference.placements(of: request.outputs)
            return .callback { [server] reply in
                server.submit(request, allowInline: inline) { result in
                    do throws(TernError) {
                        reply(.success(try self.encodeResponse(try result.get(), placements)))
                    } catch {
                        reply(.failure(GRPCStatus(error)))
                    }
                }
            }
        case "SystemSharedMemoryStatus":
            let request = try decode(Inference_SystemSharedMemoryStatusRequest.self, message)
            let regions = try server.sharedMemory.status(name: request.name.isEmpty ? nil : request.name)
            return now(try encode(Inference_SystemSharedMemoryStatusResponse.with { response in
                for region in regions {
                    response.regions[region.name] = .with {
                        $0.name = region.name; $0.key = region.key; $0.offset = region.offset; $0.byteSize = region.byteSize
                    }
                }
            }))
        case "SystemSharedMemoryRegister":
            let request = try decode(Inference_SystemSharedMemoryRegisterRequest.self, message)
            try server.sharedMemory.register(name: request.name, key: request.key, offset: request.offset, byteSize: request.byteSize)
            return now(try encode(Inference_SystemSharedMemoryRegisterResponse()))
        case "SystemSharedMemoryUnregister":
            let request = try decode(Inference_SystemSharedMemoryUnregisterRequest.self, message)
            server.sharedMemory.unregister(name: request.name.isEmpty ? nil : request.name)
            return now(try encode(Inference_SystemSharedMemoryUnregisterResponse()))
        case "CudaSharedMemoryStatus":
            let request = try decode(Inference_CudaSharedMemoryStatusRequest.self, message)
            var response = Inference_CudaSharedMemoryStatusResponse()
            for status in try server.sharedMemory.cudaStatus(name: request.name.isEmpty ? nil : request.name) {
                var region = Inference_CudaSharedMemoryStatusResponse.RegionStatus()
                region.name = status.name
                region.deviceID = UInt64(status.deviceID)
                region.byteSize = status.byteSize
                response.regions[status.name] = region
            }
            return now(try encode(response))
        case "CudaSharedMemoryRegister":
            let request = try decode(Inference_CudaSharedMemoryRegisterRequest.self, message)
            try server.sharedMemory.registerCUDA(name: request.name, handle: request.rawHandle, deviceID: request.deviceID, byteSize: request.byteSize)
            return now(try encode(Inference_CudaSharedMemoryRegisterResponse()))
        case "CudaSharedMemoryUnregister":
            let request = try decode(Inference_CudaSharedMemoryUnregisterRequest.self, message)
            server.sharedMemory.unregisterCUDA(name: request.name.isEmpty ? nil : request.name)
            return now(try encode(Inference_CudaSharedMemoryUnregisterResponse()))
        case "RepositoryModelLoad":
            let request = try decode(Inference_RepositoryModelLoadRequest.self, message)
            var json: String? = nil
            if case .stringParam(let text)? = request.parameters["config"]?.parameterChoice { json = text }
            var files: [String: Data] = [:]
            for (key, value) in request.parameters where key.hasPrefix("file:") {
                switch value.parameterChoice {
                case .bytesParam(let bytes)?: files[key] = bytes
                case .stringParam(let text)?:
                    guard let data = Data(base64Encoded: text) else { throw .invalidArgument("load parameter '\(key)' must be file bytes") }
                    files[key] = data
                default: throw .invalidArgument("load parameter '\(key)' must be file bytes")
                }
            }
            let configJSON = json
            let content = files
            return .later { [server] in
                await LifecycleEvent.$requestedBy.withValue(by) {
                    do throws(TernError) {
                        try await server.load(model: request.modelName, configJSON: configJSON, files: content)
                        return .success(try self.encode(Inference_RepositoryModelLoadResponse()))
                    } catch {
                        return .failure(GRPCStatus(error))
                    }
                }
            }
        default:
            return .now(.failure(GRPCStatus(code: .unimplemented, message: "Method not found: \(method)")))
        }
    }

    /// One message of a ModelStreamInfer stream; errors travel in-band in `error_message`.
    func streamInfer(message: ByteBuffer) async -> Result<[UInt8], GRPCStatus> {
        let request: Inference_ModelInferRequest
        do {
            request = try decode(Inference_ModelInferRequest.self, message)
        } catch {
            return .failure(GRPCStatus(error))
        }
        var out = Inference_ModelStreamInferResponse()
        do throws(TernError) {
            let converted = try GRPCConversions.request(request, sharedMemory: server.sharedMemory, maxTensorBytes: maxMessageSize)
            let placements = try SharedMemoryReference.placements(of: converted.outputs)
            let response = try await server.infer(converted)
            try server.sharedMemory.write(outputsOf: response, placements: placements)
            out.inferResponse = GRPCConversions.response(response, inSharedMemory: placements)
        } catch {
            out.errorMessage = error.message
            out.inferResponse.id = request.id
            out.inferResponse.modelName = request.modelName
        }
        do {
            return .success(try encode(out))
        } catch {
            return .failure(GRPCStatus(error))
        }
    }

    /// An inference response, its shared-memory outputs first copied into their regions.
    private func encodeResponse(_ response: InferenceResponse, _ placements: [String: SharedMemoryReference]) throws(TernError) -> [UInt8] {
        if !placements.isEmpty { try server.sharedMemory.write(outputsOf: response, placements: placements) }
        return try encode(GRPCConversions.response(response, inSharedMemory: placements))
    }

    private func decode<M: SwiftProtobuf.Message>(_: M.Type, _ buffer: ByteBuffer) throws(TernError) -> M {
        try GRPCMessage.decode(M.self) { try buffer.withUnsafeReadableBytes { raw in try M(serializedBytes: raw) } }
    }

    private func encode<M: SwiftProtobuf.Message>(_ message: M) throws(TernError) -> [UInt8] {
        try GRPCMessage.encode(message)
    }
}

extension GRPCConversions {
    static func metadata(_ metadata: ModelMetadata) -> Inference_ModelMetadataResponse {
        func tensors(_ specs: [TensorSpec]) -> [Inference_ModelMetadataResponse.TensorMetadata] {
            specs.map { spec in .with { $0.name = spec.name; $0.datatype = spec.dataType.protocolName; $0.shape = spec.shape } }
        }
        return .with {
            $0.name = metadata.name
            $0.versions = metadata.versions
            $0.platform = metadata.platform
            $0.inputs = tensors(metadata.inputs)
            $0.outputs = tensors(metadata.outputs)
        }
    }
}
