import Foundation
import Logging
import TernCore
import TernONNXRuntime
import TernRuntime

/// Shared set-up for Tern's tests: where the fixture and example models are, one ONNX Runtime
/// backend per process, and temporary model repositories.
public enum TestEnvironment {
    /// The package root, found from this file's location.
    public static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// Fixture models made by `scripts/make_models.py fixtures` (`make fixtures`).
    public static var fixtures: URL {
        if let path = ProcessInfo.processInfo.environment["TERN_FIXTURES"] { return URL(fileURLWithPath: path) }
        return packageRoot.appendingPathComponent(".cache/fixtures")
    }

    /// The example repository (`make models`).
    public static var examples: URL {
        if let path = ProcessInfo.processInfo.environment["TERN_EXAMPLES"] { return URL(fileURLWithPath: path) }
        return packageRoot.appendingPathComponent("examples/models")
    }

    /// The tests' logger: warnings and worse only.
    public static let logger: Logger = {
        var logger = Logger(label: "tern-tests")
        logger.logLevel = .warning
        return logger
    }()

    /// One ONNX Runtime backend for the whole test process (the library is loaded once).
    public static let backend: Result<ONNXRuntimeBackend, TernError> = Result { () throws(TernError) in
        try ONNXRuntimeBackend(logger: logger)
    }

    /// A fresh temporary folder.
    public static func temporaryDirectory(_ name: String = "tern") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A repository holding copies of the named models from `source` (fixtures by default).
    public static func repository(with models: [String], from source: URL = fixtures) throws -> URL {
        let root = try temporaryDirectory("repo")
        for model in models {
            try FileManager.default.copyItem(at: source.appendingPathComponent(model), to: root.appendingPathComponent(model))
        }
        return root
    }

    /// Writes `text` as `<repo>/<model>/config.pbtxt`.
    public static func writeConfig(_ text: String, model: String, in repository: URL) throws {
        try text.write(to: repository.appendingPathComponent("\(model)/config.pbtxt"), atomically: true, encoding: .utf8)
    }

    /// An engine over `repository`, started.
    public static func startedServer(
        repository: URL, mode: ServerConfiguration.ModelControlMode = .none, startupModels: [String] = []
    ) async throws -> InferenceServer {
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: repository, controlMode: mode, startupModels: startupModels, cpuCores: 2),
            backends: [try backend.get()], logger: logger)
        await server.start()
        return server
    }
}
