import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization
import TernCore
import TernClient
import TernGRPC
import TernHTTP
import TernONNXRuntime
import TernRuntime

/// The workers that send the measured calls: async scopes for the in-process modes, blocking
/// threads for the network ones.
extension PerfCommand {
    func workerScope(_ mode: Mode, request: InferenceRequest, local: LocalModel?) throws -> LoadGenerator.WorkerScope {
        switch mode {
        case .direct:
            guard let local else { throw ValidationError("--protocol direct needs --model-repository") }
            let instance = try local.directInstance(model: model)
            let outputs = try local.server.modelConfig(model).output.map(\.name)
            let inputs = request.inputs
            return { loop in await loop { _ = try instance.execute(inputs: inputs, outputNames: outputs) } }
        case .inProcess:
            guard let local else { throw ValidationError("--protocol in-process needs --model-repository") }
            let server = local.server
            return { loop in await loop { _ = try await server.infer(request) } }
        case .httpBinary, .httpJSON, .grpc:
            throw ValidationError("\(mode.rawValue) runs on blocking workers")
        }
    }

    /// Network modes: one thread and one connection per worker, the request encoded once (once
    /// per worker with shared memory: each worker's outputs have a slot of their own).
    func blockingWorker(_ mode: Mode, request: InferenceRequest, placed: PerfSharedMemory?) throws -> LoadGenerator.BlockingWorker? {
        let host = self.host
        let slots = SlotCounter()
        switch mode {
        case .direct, .inProcess:
            return nil
        case .httpBinary, .httpJSON:
            let binary = mode == .httpBinary
            let encode: @Sendable (InferenceRequest, [String: SharedMemoryReference]) throws -> ([UInt8], [(String, String)]) = { request, inputs in
                let (body, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: binary, sharedMemoryInputs: inputs)
                let headers = headerLength.map { [("Inference-Header-Content-Length", String($0)), ("Content-Type", "application/octet-stream")] }
                    ?? [("Content-Type", "application/json")]
                return (Array(body.readableBytesView), headers)
            }
            let (bytes, headers) = try encode(request, [:])
            let path = "/v2/models/\(request.modelName)/infer"
            let port = httpPort
            return {
                let (bytes, headers) = try placed.map { try encode($0.request(slot: slots.next()), $0.inputs) } ?? (bytes, headers)
                let client = try KServeHTTPClient.BlockingCaller(host: host, port: port, path: path, headers: headers, body: bytes, freshIDs: request.id == KServeHTTPClient.BlockingCaller.idPlaceholder)
                return {
                    let (status, errorBody) = try client.roundTrip()
                    guard status == 200 else { throw WireCallError("HTTP \(status): \(errorBody ?? "")") }
                }
            }
        case .grpc:
            let message = try KServeGRPCClient.serializedInferRequest(request)
            let port = grpcPort
            return {
                let bytes = try placed.map { try $0.grpcMessage(slot: slots.next()) } ?? message
                let client = try KServeGRPCClient.BlockingCaller(host: host, port: port, method: "/inference.GRPCInferenceService/ModelInfer", message: bytes)
                return { try client.call() }
            }
        }
    }
}
