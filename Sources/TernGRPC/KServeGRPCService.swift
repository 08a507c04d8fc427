import GRPCCore
import SwiftProtobuf
import TernCore
import TernRuntime

/// The KServe v2 `inference.GRPCInferenceService` over the engine. Each method converts the
/// message, calls the engine and converts back; errors become Triton's gRPC statuses.
public struct KServeGRPCService: Sendable {
    let server: InferenceServer

    public init(server: InferenceServer) { self.server = server }

    /// The service in the form grpc-swift's `GRPCServer` registers.
    public var registrable: any RegistrableRPCService { Implementation(server: server) }
}

struct Implementation: Inference_GRPCInferenceService.SimpleServiceProtocol {
    let server: InferenceServer

    private func mapped<T>(_ body: () async throws(TernError) -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw error.rpcError
        }
    }

    func serverLive(request: Inference_ServerLiveRequest, context: ServerContext) async throws -> Inference_ServerLiveResponse {
        .with { $0.live = server.isLive }
    }

    func serverReady(request: Inference_ServerReadyRequest, context: ServerContext) async throws -> Inference_ServerReadyResponse {
        .with { $0.ready = server.isReady }
    }

    func modelReady(request: Inference_ModelReadyRequest, context: ServerContext) async throws -> Inference_ModelReadyResponse {
        try await mapped { () throws(TernError) in
            let version = try GRPCConversions.version(request.version)
            return .with { $0.ready = server.isModelReady(request.name, version: version) }
        }
    }

    func serverMetadata(request: Inference_ServerMetadataRequest, context: ServerContext) async throws -> Inference_ServerMetadataResponse {
        let metadata = server.serverMetadata
        return .with {
            $0.name = metadata.name
            $0.version = metadata.version
            $0.extensions = metadata.extensions
        }
    }

    func modelMetadata(request: Inference_ModelMetadataRequest, context: ServerContext) async throws -> Inference_ModelMetadataResponse {
        try await mapped { () throws(TernError) in
            let metadata = try server.modelMetadata(request.name, version: try GRPCConversions.version(request.version))
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

    func modelInfer(request: Inference_ModelInferRequest, context: ServerContext) async throws -> Inference_ModelInferResponse {
        try await mapped { () throws(TernError) in
            GRPCConversions.response(try await server.infer(try GRPCConversions.request(request)))
        }
    }

    func modelStreamInfer(
        request: RPCAsyncSequence<Inference_ModelInferRequest, any Error>,
        response: RPCWriter<Inference_ModelStreamInferResponse>, context: ServerContext
    ) async throws {
        for try await message in request {
            var out = Inference_ModelStreamInferResponse()
            do throws(TernError) {
                out.inferResponse = GRPCConversions.response(try await server.infer(try GRPCConversions.request(message)))
            } catch {
                // Errors travel in-band so one bad request does not end the stream.
                out.errorMessage = error.message
                out.inferResponse.id = message.id
                out.inferResponse.modelName = message.modelName
            }
            try await response.write(out)
        }
    }

    func modelConfig(request: Inference_ModelConfigRequest, context: ServerContext) async throws -> Inference_ModelConfigResponse {
        try await mapped { () throws(TernError) in
            let config = try server.modelConfig(request.name, version: try GRPCConversions.version(request.version))
            return .with { $0.config = config }
        }
    }

    func modelStatistics(request: Inference_ModelStatisticsRequest, context: ServerContext) async throws -> Inference_ModelStatisticsResponse {
        try await mapped { () throws(TernError) in
            let stats = try server.statistics(
                model: request.name.isEmpty ? nil : request.name, version: try GRPCConversions.version(request.version))
            return .with { $0.modelStats = stats.map(GRPCConversions.statistics) }
        }
    }

    func repositoryIndex(request: Inference_RepositoryIndexRequest, context: ServerContext) async throws -> Inference_RepositoryIndexResponse {
        .with {
            $0.models = server.repositoryIndex(readyOnly: request.ready).map { entry in
                .with { $0.name = entry.name; $0.version = entry.version; $0.state = entry.state; $0.reason = entry.reason }
            }
        }
    }

    func repositoryModelLoad(request: Inference_RepositoryModelLoadRequest, context: ServerContext) async throws -> Inference_RepositoryModelLoadResponse {
        try await mapped { () throws(TernError) in
            var configJSON: String? = nil
            if case .stringParam(let json)? = request.parameters["config"]?.parameterChoice { configJSON = json }
            try await server.load(model: request.modelName, configJSON: configJSON)
            return Inference_RepositoryModelLoadResponse()
        }
    }

    func repositoryModelUnload(request: Inference_RepositoryModelUnloadRequest, context: ServerContext) async throws -> Inference_RepositoryModelUnloadResponse {
        try await mapped { () throws(TernError) in
            try server.unload(model: request.modelName)
            return Inference_RepositoryModelUnloadResponse()
        }
    }
}
