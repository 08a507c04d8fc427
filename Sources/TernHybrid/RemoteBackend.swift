import Dispatch
import Foundation
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
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
public struct RemoteBackend: Backend {
    public init() {}
    public var name: String { "remote" }
    public var platforms: [String] { ["kserve_remote"] }
    public var defaultModelFilename: String { "" }
    /// Remote calls mostly wait on the network: several at once per model.
    public var defaultInstanceCount: Int? { 8 }

    public func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        let modelDirectory = modelPath.standardizedFileURL.deletingLastPathComponent()
        let settings = try RemoteSettings(config: config, modelDirectory: modelDirectory)
        let client = try RemoteKServeClient(settings: settings)
        let signature = config.input.isEmpty || config.output.isEmpty
            ? try client.signature()
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

/// One instance: forwards each batch as one remote call.
final class RemoteInstance: ModelInstance {
    let client: RemoteKServeClient
    let signature: ModelSignature

    init(client: RemoteKServeClient, signature: ModelSignature) {
        self.client = client
        self.signature = signature
    }

    /// A remote call waits on the network (and on SwiftNIO futures): never on an event loop.
    var mayRunOnCallerThread: Bool { false }

    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        let response = try client.infer(InferenceRequest(
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

/// A blocking KServe v2 client (HTTP or gRPC, plain or TLS) with timeouts and retries; model
/// instances call it from their own threads.
final class RemoteKServeClient: Sendable {
    let settings: RemoteSettings
    private let http: KServeHTTPTransport?
    private let grpc: KServeGRPCConnection?

    init(settings: RemoteSettings) throws(TernError) {
        self.settings = settings
        switch settings.transport {
        case .http:
            http = try KServeHTTPTransport(host: settings.host, port: settings.port, timeout: settings.timeout, headers: settings.headers, tls: try settings.nioTLS())
            grpc = nil
        case .grpc:
            http = nil
            do {
                grpc = try KServeGRPCConnection(host: settings.host, port: settings.port, security: settings.grpcSecurity(), headers: settings.headers)
            } catch {
                throw .invalidArgument("model '\(settings.model)': cannot set up the gRPC connection to \(settings.host):\(settings.port): \(error)")
            }
        }
    }

    /// The remote model's inputs and outputs, from its metadata.
    func signature() throws(TernError) -> ModelSignature {
        try withRetries { () throws(KServeAttemptFailure) in
            if let grpc {
                let settings = self.settings
                return try Self.waiting { () async throws(TernError) in
                    try await grpc.signature(model: settings.model, version: settings.version, timeout: settings.timeout)
                }
            }
            let reply = try http!.exchange(method: .GET, path: settings.modelPath, body: nil, extraHeaders: [])
            try check(reply)
            return try Self.signature(json: Data(reply.body.readableBytesView), model: settings.model)
        }
    }

    func infer(_ request: InferenceRequest) throws(TernError) -> InferenceResponse {
        if let grpc {
            let timeout = settings.timeout
            return try withRetries { () throws(KServeAttemptFailure) in
                try Self.waiting { () async throws(TernError) in try await grpc.infer(request, timeout: timeout) }
            }
        }
        let (body, headerLength): (ByteBuffer, Int?)
        do {
            (body, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: true)
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("cannot encode the remote request: \(error)", cause: error)
        }
        var extra = [("Content-Type", "application/octet-stream")]
        if let headerLength { extra.append(("Inference-Header-Content-Length", String(headerLength))) }
        let reply = try withRetries { () throws(KServeAttemptFailure) in
            let reply = try http!.exchange(method: .POST, path: settings.modelPath + "/infer", body: body, extraHeaders: extra)
            try check(reply)
            return reply
        }
        do {
            let length = reply.headers["Inference-Header-Content-Length"].first.flatMap { Int($0) }
            return try KServeHTTPEncoding.response(body: reply.body, headerLength: length)
        } catch let error as TernError {
            throw TernError(.unavailable, "remote model '\(settings.model)': \(error.message)")
        } catch {
            throw .unavailable("remote model '\(settings.model)': unreadable response: \(error)")
        }
    }

    /// Refuses a non-200 answer with the error it stands for; a 503 may be retried.
    private func check(_ reply: KServeHTTPReply) throws(KServeAttemptFailure) {
        guard reply.status != 200 else { return }
        throw KServeAttemptFailure(
            error: Self.error(status: reply.status, body: Data(reply.body.readableBytesView), model: settings.model),
            retryable: reply.status == 503)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are spent (waiting
    /// `backoff`, doubled each time). A kept-alive connection found closed is replaced at once.
    private func withRetries<T>(_ attempt: () throws(KServeAttemptFailure) -> T) throws(TernError) -> T {
        var retries = 0
        var stale = 0
        var delay = settings.backoff
        while true {
            do {
                return try attempt()
            } catch {
                if error.staleConnection, stale < 4 {
                    stale += 1
                    continue
                }
                guard error.retryable, retries < settings.retries else { throw error.error }
                retries += 1
                Thread.sleep(forTimeInterval: delay.seconds)
                delay = delay * 2
            }
        }
    }

    /// Waits on this (model instance) thread for an async call; gRPC errors that say the remote
    /// could not answer may be retried.
    private static func waiting<T: Sendable>(_ call: @escaping @Sendable () async throws(TernError) -> T) throws(KServeAttemptFailure) -> T {
        let outcome = Mutex<Result<T, TernError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let result: Result<T, TernError>
            do throws(TernError) {
                result = .success(try await call())
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        switch outcome.withLock({ $0 })! {
        case .success(let value): return value
        case .failure(let error): throw KServeAttemptFailure(error: error, retryable: error.code == .unavailable)
        }
    }

    static func signature(json: Data, model: String) throws(KServeAttemptFailure) -> ModelSignature {
        guard let object = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else {
            throw KServeAttemptFailure(error: .unavailable("remote model '\(model)': unreadable metadata"), retryable: false)
        }
        func specs(_ key: String) throws(KServeAttemptFailure) -> [TensorSpec] {
            try ((object[key] as? [[String: Any]]) ?? []).map { entry throws(KServeAttemptFailure) in
                guard let name = entry["name"] as? String, let type = (entry["datatype"] as? String).flatMap(DataType.init(protocolName:)),
                    let shape = entry["shape"] as? [NSNumber]
                else { throw KServeAttemptFailure(error: .unavailable("remote model '\(model)': malformed metadata entry \(entry)"), retryable: false) }
                return TensorSpec(name: name, dataType: type, shape: shape.map(\.int64Value))
            }
        }
        return ModelSignature(inputs: try specs("inputs"), outputs: try specs("outputs"))
    }

    static func error(status: Int, body: Data, model: String) -> TernError {
        let message = ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any])?["error"] as? String
            ?? String(decoding: body.prefix(200), as: UTF8.self)
        let text = "remote model '\(model)': \(message)"
        switch status {
        case 400: return .invalidArgument(text)
        case 404: return .notFound(text)
        default: return .unavailable(text + " (HTTP \(status))")
        }
    }
}
