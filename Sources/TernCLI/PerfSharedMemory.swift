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

/// `tern perf --shared-memory system`: the inputs written once into a region every call reads,
/// and a region with `slots` × outputs places of `--output-shared-memory-size` bytes, both
/// registered with the server over the protocol being measured and removed afterwards.
struct PerfSharedMemory: Sendable {
    let mode: PerfCommand.Mode
    let host: String
    let port: Int
    let names: (input: String, output: String)
    let inputRegion: ClientSharedMemory
    let outputRegion: ClientSharedMemory
    let base: InferenceRequest
    let inputs: [String: SharedMemoryReference]
    let outputs: [String]
    let outputSize: Int
    let slots: Int

    static func setUp(mode: PerfCommand.Mode, command: PerfCommand, request: InferenceRequest, slots: Int) async throws -> PerfSharedMemory {
        let port = mode == .grpc ? command.grpcPort : command.httpPort
        let outputs = try await outputNames(mode: mode, host: command.host, port: port, model: command.model)
        let prefix = "tern-perf-\(getpid())-\(mode.rawValue)"
        let (inputBytes, offsets) = ClientSharedMemory.layout(request.inputs)
        let inputRegion = try ClientSharedMemory(key: "/\(prefix)-in", byteSize: inputBytes)
        var inputs: [String: SharedMemoryReference] = [:]
        for (tensor, offset) in zip(request.inputs, offsets) {
            inputRegion.write(tensor, at: offset)
            inputs[tensor.name] = SharedMemoryReference(region: "\(prefix)-in", byteSize: tensor.data.count, offset: offset)
        }
        let size = command.outputSharedMemorySize
        guard size > 0 else { throw ValidationError("--output-shared-memory-size must be positive") }
        let outputRegion = try ClientSharedMemory(key: "/\(prefix)-out", byteSize: max(1, slots * outputs.count) * size)
        let placed = PerfSharedMemory(
            mode: mode, host: command.host, port: port, names: ("\(prefix)-in", "\(prefix)-out"), inputRegion: inputRegion,
            outputRegion: outputRegion, base: request, inputs: inputs, outputs: outputs, outputSize: size, slots: max(1, slots))
        try await placed.register(placed.names.input, inputRegion)
        do {
            try await placed.register(placed.names.output, outputRegion)
        } catch {
            await placed.tearDown()  // the server must not keep the input region mapped
            throw error
        }
        return placed
    }

    /// The request with every output placed in `slot`'s share of the output region.
    func request(slot: Int) -> InferenceRequest {
        var request = base
        let first = (slot % slots) * outputs.count
        request.outputs = outputs.enumerated().map { index, name in
            RequestedOutput(name: name, parameters: SharedMemoryReference(region: names.output, byteSize: outputSize, offset: (first + index) * outputSize).parameters)
        }
        return request
    }

    func grpcMessage(slot: Int) throws -> [UInt8] {
        try KServeGRPCClient.serializedInferRequest(request(slot: slot), sharedMemoryInputs: inputs)
    }

    private func register(_ name: String, _ region: ClientSharedMemory) async throws {
        if mode == .grpc {
            try await KServeGRPCClient.with(host: host, port: port) {
                try await $0.registerSystemSharedMemory(name: name, key: region.key, byteSize: UInt64(region.bytes.count))
            }
            return
        }
        let body = ByteBuffer(data: try JSONSerialization.data(withJSONObject: ["key": region.key, "offset": 0, "byte_size": region.bytes.count]))
        let reply = try await KServeHTTPClient(host: host, port: port).send(
            .POST, "/v2/systemsharedmemory/region/\(name)/register", headers: [("Content-Type", "application/json")], body: body)
        guard reply.status == 200 else {
            throw TernError.invalidArgument("registering shared memory '\(name)' failed: HTTP \(reply.status) \(reply.text)")
        }
    }

    /// Unregisters both regions (the objects are unlinked when the last copy of this goes).
    func tearDown() async {
        for name in [names.input, names.output] {
            if mode == .grpc {
                try? await KServeGRPCClient.with(host: host, port: port) { try await $0.unregisterSystemSharedMemory(name: name) }
            } else {
                _ = try? await KServeHTTPClient(host: host, port: port).send(.POST, "/v2/systemsharedmemory/region/\(name)/unregister")
            }
        }
    }

    private static func outputNames(mode: PerfCommand.Mode, host: String, port: Int, model: String) async throws -> [String] {
        if mode == .grpc {
            return try await KServeGRPCClient.with(host: host, port: port) { try await $0.signature(model: model) }.outputs.map(\.name)
        }
        return try await KServeHTTPClient(host: host, port: port).signature(model: model).outputs.map(\.name)
    }
}
