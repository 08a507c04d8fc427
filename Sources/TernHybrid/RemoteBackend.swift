import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import Synchronization
import TernCore
import TernHTTP

/// A model served by a remote KServe v2 server (another Tern, or any Triton) over HTTP with the
/// binary tensor extension. config.pbtxt names it with `backend: "remote"` and parameters:
///
/// - `tern.remote.url`: `http://host:port` (required);
/// - `tern.remote.model` / `tern.remote.version`: the model there (default: this model's name, its
///   highest version);
/// - `tern.remote.timeout_ms` (default 5000) for connecting and for each read and write;
/// - `tern.remote.retries` (default 2) after a connection failure, a timeout or a 503, waiting
///   `tern.remote.backoff_ms` (default 50) doubled each time;
/// - `tern.remote.header.<Name>`: a header sent with every call (credentials: `Authorization`).
///
/// Inputs and outputs left out of the config are read from the remote model's metadata at load.
/// Connections are kept alive and reused. Remote errors keep their meaning: 400 → invalid
/// argument, 404 → not found, anything the server cannot answer (unreachable, timeout, 5xx) →
/// unavailable.
public struct RemoteBackend: Backend {
    public init() {}
    public var name: String { "remote" }
    public var platforms: [String] { ["kserve_remote"] }
    public var defaultModelFilename: String { "" }
    /// Remote calls mostly wait on the network: several at once per model.
    public var defaultInstanceCount: Int? { 8 }

    public func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        let settings = try RemoteSettings(config: config)
        let client = RemoteKServeClient(settings: settings)
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
    var host: String
    var port: Int
    var model: String
    var version: Int64?
    var timeout: Duration
    var retries: Int
    var backoff: Duration
    var headers: [(String, String)]

    init(config: ModelConfig) throws(TernError) {
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
        guard let url = text("url"), let components = URLComponents(string: url), let host = components.host else {
            throw .invalidArgument("model '\(config.name)': a remote model needs parameters { key: \"tern.remote.url\" value: { string_value: \"http://host:port\" } }")
        }
        guard components.scheme == "http" else {
            throw .invalidArgument("model '\(config.name)': tern.remote.url \(url): only http:// is supported (put a TLS-terminating proxy in front for https)")
        }
        self.host = host
        port = components.port ?? 80
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
}

/// One instance: forwards each batch as one remote call.
final class RemoteInstance: ModelInstance {
    let client: RemoteKServeClient
    let signature: ModelSignature

    init(client: RemoteKServeClient, signature: ModelSignature) {
        self.client = client
        self.signature = signature
    }

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

/// Blocking KServe v2 HTTP client with kept-alive connections, timeouts and retries.
final class RemoteKServeClient: Sendable {
    let settings: RemoteSettings
    /// Idle connections (taken by one call at a time, returned when the exchange completed).
    private let idle = Mutex<[BlockingSocketBox]>([])

    /// A socket moved between threads; only one call uses it at a time.
    struct BlockingSocketBox: @unchecked Sendable {
        let socket: BlockingSocket
    }

    init(settings: RemoteSettings) {
        self.settings = settings
    }

    /// The remote model's inputs and outputs, from its metadata.
    func signature() throws(TernError) -> ModelSignature {
        let (status, _, body) = try exchange("GET", settings.modelPath, body: nil)
        guard status == 200 else { throw Self.error(status: status, body: body, model: settings.model) }
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
            throw .unavailable("remote model '\(settings.model)': unreadable metadata")
        }
        func specs(_ key: String) throws(TernError) -> [TensorSpec] {
            try ((object[key] as? [[String: Any]]) ?? []).map { entry throws(TernError) in
                guard let name = entry["name"] as? String, let type = (entry["datatype"] as? String).flatMap(DataType.init(protocolName:)),
                    let shape = entry["shape"] as? [NSNumber]
                else { throw .unavailable("remote model '\(settings.model)': malformed metadata entry \(entry)") }
                return TensorSpec(name: name, dataType: type, shape: shape.map(\.int64Value))
            }
        }
        return ModelSignature(inputs: try specs("inputs"), outputs: try specs("outputs"))
    }

    func infer(_ request: InferenceRequest) throws(TernError) -> InferenceResponse {
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
        let (status, headers, reply) = try exchange("POST", settings.modelPath + "/infer", body: Data(body.readableBytesView), extraHeaders: extra)
        guard status == 200 else { throw Self.error(status: status, body: reply, model: settings.model) }
        do {
            let length = headers.first { $0.name.caseInsensitiveCompare("Inference-Header-Content-Length") == .orderedSame }.flatMap { Int($0.value) }
            return try KServeHTTPEncoding.response(body: ByteBuffer(data: reply), headerLength: length)
        } catch let error as TernError {
            throw TernError(.unavailable, "remote model '\(settings.model)': \(error.message)")
        } catch {
            throw .unavailable("remote model '\(settings.model)': unreadable response: \(error)")
        }
    }

    /// One HTTP exchange with retries: a failed connection, a timeout or a 503 is retried with
    /// backoff; other answers are returned as they are.
    private func exchange(
        _ method: String, _ path: String, body: Data?, extraHeaders: [(String, String)] = []
    ) throws(TernError) -> (Int, [(name: String, value: String)], Data) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(settings.host):\(settings.port)\r\nContent-Length: \(body?.count ?? 0)\r\n"
        for (name, value) in settings.headers + extraHeaders { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        let request = Data(head.utf8) + (body ?? Data())
        var attempt = 0
        var delay = settings.backoff
        while true {
            let reused = idle.withLock { $0.popLast() }
            do {
                let socket = try reused?.socket ?? BlockingSocket(host: settings.host, port: settings.port, timeout: settings.timeout)
                try socket.write(request)
                let head = try HTTP1ResponseHead.read(from: socket)
                let reply = try socket.consume(try head.contentLength()) { Data($0) }
                let keep = head.header("Connection")?.lowercased() != "close"
                if keep { idle.withLock { $0.append(BlockingSocketBox(socket: socket)) } }
                if head.status == 503, attempt < settings.retries {
                    attempt += 1
                    Thread.sleep(forTimeInterval: delay.seconds)
                    delay = delay * 2
                    continue
                }
                return (head.status, head.headers, reply)
            } catch {
                // A kept-alive connection the server closed meanwhile: try again at once on a new one.
                if reused != nil { continue }
                guard attempt < settings.retries else {
                    let what = (error as? SocketError)?.timedOut == true ? "timed out" : "is unreachable"
                    throw .unavailable("remote model '\(settings.model)' at \(settings.host):\(settings.port) \(what): \(error)")
                }
                attempt += 1
                Thread.sleep(forTimeInterval: delay.seconds)
                delay = delay * 2
            }
        }
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
