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

/// The model loaded in this process, for the direct and in-process modes.
struct LocalModel: Sendable {
    let server: InferenceServer
    let backend: ONNXRuntimeBackend
    let repository: URL

    static func load(model: String, repository: String?, needed: Bool, library: String?, logger: Logger) async throws -> LocalModel? {
        guard needed, let repository else { return nil }
        let backend = try ONNXRuntimeBackend(locator: ORTLibraryLocator(explicitPath: library), logger: logger)
        let url = URL(fileURLWithPath: repository)
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: url, controlMode: .explicit, startupModels: [model]),
            backends: [backend], logger: logger)
        await server.start()
        guard server.isModelReady(model) else { throw TernError.notFound("model '\(model)' did not load from \(repository)") }
        return LocalModel(server: server, backend: backend, repository: url)
    }

    /// A fresh ONNX Runtime session of the model with the engine's own settings, called directly.
    func directInstance(model: String) throws -> any ModelInstance {
        let config = try server.modelConfig(model)
        let version = try server.modelMetadata(model).versions.last ?? "1"
        let file = repository.appendingPathComponent("\(model)/\(version)/\(config.defaultModelFilename.isEmpty ? backend.defaultModelFilename : config.defaultModelFilename)")
        let placement = InferenceServer.placements(for: config, cpuCores: server.configuration.cpuCores)[0]
        return try backend.makeInstance(modelPath: file, config: config, instance: placement, logger: server.logger)
    }
}
