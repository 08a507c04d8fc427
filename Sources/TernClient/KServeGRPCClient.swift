import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import TernCore

/// A small KServe v2 gRPC client over grpc-swift, used by `tern infer` and `tern perf`.
public struct KServeGRPCClient: Sendable {
    /// Largest message sent or received by default: the gRPC frontend's default limit too.
    public static let defaultMaxMessageSize = 256 << 20

    private let service: Inference_GRPCInferenceService.Client<HTTP2ClientTransport.Posix>

    /// Connects to `host:port`, runs `body`, then closes the connection.
    public static func with<T: Sendable>(
        host: String, port: Int, maxMessageSize: Int = Self.defaultMaxMessageSize,
        _ body: (KServeGRPCClient) async throws -> T
    ) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host == "localhost" ? "127.0.0.1" : host, port: port), transportSecurity: .plaintext, config: transportConfig)
        return try await withGRPCClient(transport: transport) { client in
            try await body(KServeGRPCClient(service: Inference_GRPCInferenceService.Client(wrapping: client)))
        }
    }

    /// The HTTP/2 settings Tern's gRPC clients use: large frames and windows for tensors, and no
    /// flush coalescing (see GRPCFrontend: it delays every response at low load).
    static var transportConfig: HTTP2ClientTransport.Posix.Config {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.http2.maxFrameSize = 1 << 20
        config.http2.targetWindowSize = 16 << 20
        config.connection.flushCoalescing = nil
        return config
    }

    static func options(_ maxMessageSize: Int, timeout: Duration? = nil) -> CallOptions {
        var options = CallOptions.defaults
        options.maxResponseMessageBytes = maxMessageSize
        options.maxRequestMessageBytes = maxMessageSize
        options.timeout = timeout
        return options
    }

    /// Sends a prepared ModelInfer message (perf reuses one message for every call).
    func infer(message: Inference_ModelInferRequest) async throws -> Inference_ModelInferResponse {
        try await service.modelInfer(message, options: Self.options(Self.defaultMaxMessageSize))
    }

    /// Runs one inference; tensors travel in raw_input_contents / raw_output_contents.
    public func infer(_ request: InferenceRequest) async throws -> InferenceResponse {
        let response = try await infer(message: KServeGRPCCodec.message(request))
        return try KServeGRPCCodec.response(response)
    }

    /// A reusable closure that sends the same request again and again (for load generation).
    public func repeater(for request: InferenceRequest) -> @Sendable () async throws -> Void {
        let message = KServeGRPCCodec.message(request)
        return { _ = try await self.infer(message: message) }
    }

    /// The ModelInferRequest message for `request`, serialized (for clients that frame it themselves).
    /// Inputs named in `sharedMemoryInputs` are sent as their place in a registered region.
    public static func serializedInferRequest(
        _ request: InferenceRequest, sharedMemoryInputs: [String: SharedMemoryReference] = [:]
    ) throws -> [UInt8] {
        try KServeGRPCCodec.message(request, sharedMemoryInputs: sharedMemoryInputs).serializedBytes()
    }

    /// Registers a POSIX shared-memory object with the server (system shared-memory extension).
    public func registerSystemSharedMemory(name: String, key: String, offset: UInt64 = 0, byteSize: UInt64) async throws {
        _ = try await service.systemSharedMemoryRegister(.with {
            $0.name = name; $0.key = key; $0.offset = offset; $0.byteSize = byteSize
        })
    }

    /// Unregisters a region (every region when `name` is empty).
    public func unregisterSystemSharedMemory(name: String) async throws {
        _ = try await service.systemSharedMemoryUnregister(.with { $0.name = name })
    }

    /// The model's outputs (names).
    public func modelOutputs(_ name: String) async throws -> [String] {
        try await service.modelMetadata(.with { $0.name = name }).outputs.map(\.name)
    }

    public func modelMetadata(_ name: String) async throws -> (inputs: [TensorSpec], maxBatchSize: Int) {
        let metadata = try await service.modelMetadata(.with { $0.name = name })
        let config = try await service.modelConfig(.with { $0.name = name })
        let inputs = try metadata.inputs.map { input -> TensorSpec in
            guard let type = DataType(protocolName: input.datatype) else { throw TernError.invalidArgument("unknown datatype \(input.datatype)") }
            return TensorSpec(name: input.name, dataType: type, shape: input.shape)
        }
        return (inputs, Int(config.config.maxBatchSize))
    }
}

/// The client's direction of the gRPC codec: engine requests to ModelInferRequest messages and
/// ModelInferResponse messages back (the server's direction is TernGRPC's `GRPCConversions`).
package enum KServeGRPCCodec {
    /// An engine request as a ModelInferRequest with raw_input_contents (but for the inputs in
    /// shared memory, which carry their place as parameters).
    package static func message(_ request: InferenceRequest, sharedMemoryInputs: [String: SharedMemoryReference] = [:]) -> Inference_ModelInferRequest {
        var message = Inference_ModelInferRequest()
        message.modelName = request.modelName
        message.modelVersion = request.modelVersion.map(String.init) ?? ""
        message.id = request.id
        message.inputs = request.inputs.map { tensor in
            var input = Inference_ModelInferRequest.InferInputTensor()
            input.name = tensor.name
            input.datatype = tensor.dataType.protocolName
            input.shape = tensor.shape
            if let place = sharedMemoryInputs[tensor.name] { input.parameters = protocolParameters(place.parameters) }
            return input
        }
        message.rawInputContents = request.inputs.filter { sharedMemoryInputs[$0.name] == nil }.map(\.data)
        message.outputs = request.outputs.map { output in
            var requested = Inference_ModelInferRequest.InferRequestedOutputTensor()
            requested.name = output.name
            requested.parameters = protocolParameters(output.parameters)
            if output.classificationCount > 0 {
                var count = Inference_InferParameter()
                count.int64Param = Int64(output.classificationCount)
                requested.parameters["classification"] = count
            }
            return requested
        }
        return message
    }

    package static func protocolParameters(_ parameters: [String: InferParameter]) -> [String: Inference_InferParameter] {
        parameters.mapValues { value in
            var parameter = Inference_InferParameter()
            switch value {
            case .bool(let v): parameter.parameterChoice = .boolParam(v)
            case .int64(let v): parameter.parameterChoice = .int64Param(v)
            case .uint64(let v): parameter.parameterChoice = .uint64Param(v)
            case .double(let v): parameter.parameterChoice = .doubleParam(v)
            case .string(let v): parameter.parameterChoice = .stringParam(v)
            }
            return parameter
        }
    }

    /// A ModelInferResponse as an engine response.
    package static func response(_ message: Inference_ModelInferResponse) throws -> InferenceResponse {
        guard message.rawOutputContents.count == message.outputs.count else {
            throw TernError.internalError("the response has \(message.outputs.count) outputs but \(message.rawOutputContents.count) raw contents")
        }
        let outputs = try zip(message.outputs, message.rawOutputContents).map { output, data -> Tensor in
            guard let type = DataType(protocolName: output.datatype) else { throw TernError.internalError("unknown datatype \(output.datatype)") }
            return Tensor(name: output.name, dataType: type, shape: output.shape, data: data)
        }
        return InferenceResponse(modelName: message.modelName, modelVersion: Int64(message.modelVersion) ?? 0, id: message.id, outputs: outputs)
    }
}
