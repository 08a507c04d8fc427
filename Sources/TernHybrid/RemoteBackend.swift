import Foundation
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Synchronization
import TernCore
import TernClient

/// A model served by a remote KServe v2 server (another Tern, or any Triton). config.pbtxt names
/// it with `backend: "remote"` and parameters:
///
/// - `tern.remote.url` (required): `http://host:port` or `https://host:port` (HTTP/1.1 with the
///   binary tensor extension), `grpc://host:port` or `grpcs://host:port` (KServe v2 gRPC);
/// - `tern.remote.model` / `tern.remote.version`: the model there (default: this model's name, its
///   highest version);
/// - `tern.remote.timeout_ms` (default 5000) for connecting and for each call;
/// - `tern.remote.retries` (default 2) after a connection failure, a timeout or an "unavailable"
///   answer (HTTP 503, gRPC UNAVAILABLE), waiting `tern.remote.backoff_ms` (default 50) doubled
///   each time;
/// - `tern.remote.header.<Name>`: a header (gRPC: metadata) sent with every call — credentials
///   such as `Authorization: Bearer ...`;
/// - TLS (https, grpcs): `tern.remote.tls_ca_file` (PEM trust roots; default the system's),
///   `tern.remote.tls_cert_file` and `tern.remote.tls_key_file` (a client certificate, for mutual
///   TLS), `tern.remote.tls_verify` = `full` (default) | `no_hostname` | `none`. Relative paths
///   are read from the model's directory.
///
/// Inputs and outputs left out of the config are read from the remote model's metadata at load.
/// Connections are kept alive and reused. Remote errors keep their meaning: 400 / INVALID_ARGUMENT
/// → invalid argument, 404 / NOT_FOUND → not found, anything the server cannot answer
/// (unreachable, timeout, 5xx, other gRPC codes) → unavailable.
///
/// Runs go out asynchronously: a batch waiting on the network holds no thread. The gRPC
/// connections run in `connections`, a `Service` that `tern serve` runs in its service group
/// (an embedder runs it too). Models with sequence batching or warm-up samples cannot be remote
/// (both need synchronous runs).
public struct RemoteBackend: AsynchronousBackend {
    /// Runs the gRPC connections of remote models.
    public let connections: RemoteConnections

    /// A remote backend whose gRPC connections `connections` runs once it runs.
    public init(connections: RemoteConnections = RemoteConnections()) {
        self.connections = connections
    }

    /// The backend name config.pbtxt uses: `remote`.
    public var name: String { "remote" }
    /// The platform name that also selects it: `kserve_remote`.
    public var platforms: [String] { ["kserve_remote"] }
    /// Remote models have no model file.
    public var defaultModelFilename: String { "" }
    /// Remote calls mostly wait on the network: several at once per model.
    public var defaultInstanceCount: Int? { 8 }

    /// One instance of a remote model; its signature is read from the remote model's metadata
    /// when the config leaves inputs or outputs out.
    public func loadInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) async throws -> any ModelInstance {
        if config.schedulingChoice.map({ if case .sequenceBatching = $0 { true } else { false } }) == true {
            throw TernError.invalidArgument("a remote model cannot use sequence_batching (its runs are asynchronous)")
        }
        if !config.modelWarmup.isEmpty {
            throw TernError.invalidArgument("a remote model cannot have model_warmup samples (the remote server warms its own model)")
        }
        if config.instanceGroup.contains(where: { !$0.rateLimiter.resources.isEmpty }) {
            throw TernError.invalidArgument(
                "a remote model cannot claim rate_limiter resources (its runs are awaited, not run on this machine's instances)")
        }
        let modelDirectory = modelPath.standardizedFileURL.deletingLastPathComponent()
        let settings = try RemoteSettings(config: config, modelDirectory: modelDirectory)
        let client = try RemoteKServeClient(settings: settings, connections: connections)
        let signature = config.input.isEmpty || config.output.isEmpty
            ? try await client.signature()
            : Self.signature(of: config)
        return RemoteInstance(client: client, signature: signature)
    }

    /// The signature a model with this config has on the model side (`reshape` applied).
    static func signature(of config: ModelConfig) -> ModelSignature {
        let batch: [Int64] = config.maxBatchSize > 0 ? [-1] : []
        return ModelSignature(
            inputs: config.input.map {
                TensorSpec(name: $0.name, dataType: DataType(configType: $0.dataType) ?? .fp32, shape: batch + ($0.hasReshape ? $0.reshape.shape : $0.dims))
            },
            outputs: config.output.map {
                TensorSpec(name: $0.name, dataType: DataType(configType: $0.dataType) ?? .fp32, shape: batch + ($0.hasReshape ? $0.reshape.shape : $0.dims))
            })
    }
}

/// Runs the gRPC connections of remote models, as one `Service`: a client handed to `add` runs
/// until it is closed (its model unloaded) or the service shuts down. Clients added before
/// `run()` starts wait for it.
public final class RemoteConnections: Service, Sendable {
    private let clients: AsyncStream<KServeGRPCClient>
    private let intake: AsyncStream<KServeGRPCClient>.Continuation
    private let logger: Logger

    /// A service with nothing to run yet; `logger` hears of connections that end with an error.
    public init(logger: Logger = Logger(label: "tern.remote")) {
        (clients, intake) = AsyncStream.makeStream(of: KServeGRPCClient.self)
        self.logger = logger
    }

    /// Runs `client`'s connection while this service runs.
    func add(_ client: KServeGRPCClient) {
        intake.yield(client)
    }

    /// Runs every added client's connection until a graceful shutdown; then they finish their calls.
    public func run() async throws {
        let logger = self.logger
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await client in clients {
                    group.addTask {
                        do {
                            try await client.run()
                        } catch {
                            logger.warning("a remote gRPC connection ended with an error", metadata: [
                                "remote": .string("\(client.host):\(client.port)"), "error": .string("\(error)"),
                            ])
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.intake.finish()
        }
    }
}

/// `tern.remote.*` parameters.
struct RemoteSettings: Sendable {
    enum Transport: String, Sendable { case http, grpc }
    enum Verification: String, Sendable { case full, no_hostname, none }

    struct TLS: Sendable, Equatable {
        var caFile: String?
        var certFile: String?
        var keyFile: String?
        var verify = Verification.full
    }

    var transport: Transport
    var host: String
    var port: Int
    var tls: TLS?
    var model: String
    var version: Int64?
    var timeout: Duration
    var retries: Int
    var backoff: Duration
    var headers: [(String, String)]

    init(config: ModelConfig, modelDirectory: URL? = nil) throws(TernError) {
        func text(_ key: String) -> String? {
            guard let value = config.parameters["tern.remote." + key]?.stringValue, !value.isEmpty else { return nil }
            return value
        }
        func number(_ key: String, _ fallback: Int) throws(TernError) -> Int {
            guard let value = text(key) else { return fallback }
            guard let number = Int(value), number >= 0 else {
                throw .invalidArgument("model '\(config.name)': tern.remote.\(key) must be a non-negative integer, got '\(value)'")
            }
            return number
        }
        func file(_ key: String) throws(TernError) -> String? {
            guard let value = text(key) else { return nil }
            let path = value.hasPrefix("/") || modelDirectory == nil ? value : modelDirectory!.appendingPathComponent(value).path
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw .invalidArgument("model '\(config.name)': tern.remote.\(key): cannot read \(path)")
            }
            return path
        }
        guard let url = text("url"), let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw .invalidArgument("model '\(config.name)': a remote model needs parameters { key: \"tern.remote.url\" value: { string_value: \"http://host:port\" } }")
        }
        let secure: Bool
        switch components.scheme {
        case "http": (transport, secure) = (.http, false)
        case "https": (transport, secure) = (.http, true)
        case "grpc": (transport, secure) = (.grpc, false)
        case "grpcs": (transport, secure) = (.grpc, true)
        default:
            throw .invalidArgument("model '\(config.name)': tern.remote.url \(url): the scheme must be http, https, grpc or grpcs")
        }
        self.host = host
        port = components.port ?? (transport == .grpc ? (secure ? 443 : 8001) : (secure ? 443 : 80))
        if secure {
            var tls = TLS(caFile: try file("tls_ca_file"), certFile: try file("tls_cert_file"), keyFile: try file("tls_key_file"))
            if (tls.certFile == nil) != (tls.keyFile == nil) {
                throw .invalidArgument("model '\(config.name)': a client certificate needs both tern.remote.tls_cert_file and tern.remote.tls_key_file")
            }
            if let verify = text("tls_verify") {
                guard let mode = Verification(rawValue: verify) else {
                    throw .invalidArgument("model '\(config.name)': tern.remote.tls_verify must be full, no_hostname or none, got '\(verify)'")
                }
                tls.verify = mode
            }
            self.tls = tls
        } else if config.parameters.keys.contains(where: { $0.hasPrefix("tern.remote.tls_") }) {
            throw .invalidArgument("model '\(config.name)': tern.remote.tls_* settings need an https:// or grpcs:// url, got \(url)")
        }
        model = text("model") ?? config.name
        if let version = text("version") {
            guard let number = Int64(version), number > 0 else {
                throw .invalidArgument("model '\(config.name)': tern.remote.version must be a positive integer, got '\(version)'")
            }
            self.version = number
        }
        timeout = .milliseconds(try number("timeout_ms", 5000))
        retries = try number("retries", 2)
        backoff = .milliseconds(try number("backoff_ms", 50))
        headers = config.parameters.keys.sorted().filter { $0.hasPrefix("tern.remote.header.") }.compactMap { key in
            guard let value = config.parameters[key]?.stringValue else { return nil }
            return (String(key.dropFirst("tern.remote.header.".count)), value)
        }
    }

    var modelPath: String { "/v2/models/\(model)" + (version.map { "/versions/\($0)" } ?? "") }

    /// SwiftNIO's TLS settings for an https remote.
    func nioTLS() throws(TernError) -> TLSConfiguration? {
        guard let tls else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = tls.caFile { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) }
            if let certFile = tls.certFile, let keyFile = tls.keyFile {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
        } catch {
            throw .invalidArgument("model '\(model)': unreadable TLS certificate or key: \(error)")
        }
        switch tls.verify {
        case .full: configuration.certificateVerification = .fullVerification
        case .no_hostname: configuration.certificateVerification = .noHostnameVerification
        case .none: configuration.certificateVerification = .none
        }
        return configuration
    }

    /// grpc-swift's transport security for a grpc/grpcs remote.
    func grpcSecurity() -> HTTP2ClientTransport.Posix.TransportSecurity {
        guard let tls else { return .plaintext }
        return .tls { config in
            if let caFile = tls.caFile { config.trustRoots = .certificates([.file(path: caFile, format: .pem)]) }
            if let certFile = tls.certFile, let keyFile = tls.keyFile {
                config.certificateChain = [.file(path: certFile, format: .pem)]
                config.privateKey = .file(path: keyFile, format: .pem)
            }
            switch tls.verify {
            case .full: config.serverCertificateVerification = .fullVerification
            case .no_hostname: config.serverCertificateVerification = .noHostnameVerification
            case .none: config.serverCertificateVerification = .noVerification
            }
        }
    }
}

/// One instance: forwards each batch as one remote call, awaited.
final class RemoteInstance: AsynchronousModelInstance {
    let client: RemoteKServeClient
    let signature: ModelSignature

    init(client: RemoteKServeClient, signature: ModelSignature) {
        self.client = client
        self.signature = signature
    }

    func run(inputs: [Tensor], outputNames: [String]) async throws(TernError) -> [Tensor] {
        let response = try await client.infer(InferenceRequest(
            modelName: client.settings.model, modelVersion: client.settings.version, inputs: inputs,
            outputs: outputNames.map { RequestedOutput(name: $0) }))
        return try outputNames.map { name throws(TernError) in
            guard let tensor = response.output(named: name) else {
                throw .internalError("the remote model '\(client.settings.model)' returned no output '\(name)'")
            }
            return tensor
        }
    }
}

/// A remote model's KServe v2 client (HTTP or gRPC, plain or TLS, from `TernClient`) with the
/// model's timeout and retries; errors name the remote model.
final class RemoteKServeClient: Sendable {
    let settings: RemoteSettings
    private let http: KServeHTTPClient?
    private let grpc: KServeGRPCClient?

    init(settings: RemoteSettings, connections: RemoteConnections) throws(TernError) {
        self.settings = settings
        let prefix = "model '\(settings.model)': "
        switch settings.transport {
        case .http:
            let options = KServeHTTPClient.Options(
                timeout: settings.timeout, retries: settings.retries, backoff: settings.backoff, headers: settings.headers, tls: try settings.nioTLS())
            http = try Self.naming(prefix) { () throws(TernError) in try KServeHTTPClient(host: settings.host, port: settings.port, options: options) }
            grpc = nil
        case .grpc:
            http = nil
            let client = try Self.naming(prefix) { () throws(TernError) in
                try KServeGRPCClient(host: settings.host, port: settings.port, security: settings.grpcSecurity(), headers: settings.headers, timeout: settings.timeout)
            }
            connections.add(client)
            grpc = client
        }
    }

    deinit {
        grpc?.close()
        http?.close()
    }

    /// The remote model's inputs and outputs, from its metadata.
    func signature() async throws(TernError) -> ModelSignature {
        let settings = self.settings
        if let grpc {
            return try await retrying { () async throws(TernError) in try await grpc.signature(model: settings.model, version: settings.version) }
        }
        return try await remote { () async throws(TernError) in try await http!.signature(model: settings.model, version: settings.version) }
    }

    /// Forwards one request (the HTTP client retries by itself, over its kept-alive connections).
    func infer(_ request: InferenceRequest) async throws(TernError) -> InferenceResponse {
        if let grpc {
            return try await retrying { () async throws(TernError) in try await grpc.infer(request) }
        }
        return try await remote { () async throws(TernError) in try await http!.infer(request) }
    }

    /// Runs `call`, retrying what the remote could not answer (UNAVAILABLE: unreachable,
    /// overloaded; DEADLINE_EXCEEDED) up to the model's retries, waiting its back-off, doubled
    /// each time. Its verdicts (INVALID_ARGUMENT, INTERNAL, bad credentials, ...) are not retried.
    private func retrying<T>(_ call: () async throws(TernError) -> T) async throws(TernError) -> T {
        var retries = 0
        var delay = settings.backoff
        while true {
            do {
                return try await remote(call)
            } catch {
                guard error.code == .unavailable, retries < settings.retries else { throw error }
                retries += 1
                try? await Task.sleep(for: delay)
                delay = delay * 2
            }
        }
    }

    /// Runs `call`; its error names the remote model.
    private func remote<T>(_ call: () async throws(TernError) -> T) async throws(TernError) -> T {
        do {
            return try await call()
        } catch {
            throw TernError(error.code, "remote model '\(settings.model)': \(error.message)")
        }
    }

    private static func naming<T>(_ prefix: String, _ body: () throws(TernError) -> T) throws(TernError) -> T {
        do {
            return try body()
        } catch {
            throw TernError(error.code, prefix + error.message)
        }
    }
}
