import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TernCore

/// Tern's one KServe v2 client over HTTP/1.1, plain or TLS.
///
/// It has two modes that share the request and response encoding (`KServeHTTPEncoding`):
/// - **pooled, async** (`send`, `infer`, `metadata`): requests from any task share kept-alive
///   SwiftNIO connections, with a timeout per call and retries with doubling back-off for what
///   may succeed on another try (a refused or dropped connection, a timeout, HTTP 503). The CLI,
///   the hybrid remote backend and the test kit use it.
/// - **blocking** (`blockingCaller`): one connection on a plain socket driven by the calling
///   thread, with the request encoded once and written with one system call per repetition,
///   so a load generator (`tern perf`) adds as little as possible to what it measures.
public final class KServeHTTPClient: Sendable {
    /// How calls are made: timeout, retries, headers sent with every call, TLS.
    public struct Options: Sendable {
        /// The limit for connecting (with the TLS handshake) and for each call's answer.
        public var timeout: Duration
        /// How many more attempts a call that may succeed on another try gets.
        public var retries: Int
        /// The wait before the first retry; doubled for each further one.
        public var backoff: Duration
        /// Headers sent with every call (credentials such as `Authorization`).
        public var headers: [(String, String)]
        /// TLS settings; nil for plain HTTP.
        public var tls: TLSConfiguration?

        /// Options with a 30 s timeout, no retries, no extra headers and plain HTTP, unless given.
        public init(
            timeout: Duration = .seconds(30), retries: Int = 0, backoff: Duration = .milliseconds(50), headers: [(String, String)] = [],
            tls: TLSConfiguration? = nil
        ) {
            self.timeout = timeout
            self.retries = retries
            self.backoff = backoff
            self.headers = headers
            self.tls = tls
        }
    }

    /// One answer: the status, headers and whole body.
    public struct Reply: Sendable {
        /// The HTTP status code.
        public var status: Int
        /// The response headers.
        public var headers: HTTPHeaders
        /// The whole response body.
        public var body: ByteBuffer

        /// The body as text (for errors and JSON answers).
        public var text: String { String(buffer: body) }

        /// The body parsed as a JSON object, or nil when it is not one.
        public var jsonObject: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] }

        /// The `error` field of a KServe error answer, or the start of the body.
        public var errorMessage: String { jsonObject?["error"] as? String ?? String(text.prefix(300)) }
    }

    /// The server's host name or address.
    public let host: String
    /// The server's port.
    public let port: Int
    /// The options every call is made with.
    public let options: Options
    private let tls: NIOSSLContext?
    private let serverName: String?
    private let idle = Mutex<[PooledHTTPConnection]>([])
    private let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    /// A client for the server at `host:port`; no connection is opened until the first call.
    public init(host: String, port: Int, options: Options = Options()) throws(TernError) {
        self.host = host
        self.port = port
        self.options = options
        if let tls = options.tls {
            do {
                self.tls = try NIOSSLContext(configuration: tls)
            } catch {
                throw .invalidArgument("TLS settings for \(host):\(port): \(error)")
            }
        } else {
            self.tls = nil
        }
        // SNI and hostname checks need a name; an address literal has none.
        serverName = host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" } ? nil : host
    }

    deinit {
        close()
    }

    /// Closes the kept-alive connections (calls in flight finish on theirs).
    public func close() {
        for connection in idle.withLock({ connections in defer { connections.removeAll() }; return connections }) {
            connection.channel.close(promise: nil)
        }
    }

    // MARK: Pooled calls

    /// One call, retried as `options` allow. Any answer the server gives is returned, whatever
    /// its status, except a 503 while retries remain.
    public func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: ByteBuffer? = nil
    ) async throws(TernError) -> Reply {
        var retries = 0
        var stale = 0
        var delay = options.backoff
        while true {
            do throws(AttemptFailure) {
                let reply = try await attempt(method, path, headers: headers, body: body)
                if reply.status == 503, retries < options.retries {
                    throw AttemptFailure(error: .unavailable(reply.errorMessage), retryable: true)
                }
                return reply
            } catch {
                if error.staleConnection, stale < 4 {
                    // A kept-alive connection the server had closed: a new one at once.
                    stale += 1
                    continue
                }
                guard error.retryable, retries < options.retries else { throw error.error }
                retries += 1
                try? await Task.sleep(for: delay)
                delay = delay * 2
            }
        }
    }

    /// Runs one inference with the binary tensor extension (or JSON tensors when `binary` is
    /// false); a non-200 answer becomes the error it stands for (400 → invalid argument, 404 → not
    /// found, anything else → unavailable).
    public func infer(_ request: InferenceRequest, binary: Bool = true) async throws(TernError) -> InferenceResponse {
        let (body, headerLength): (ByteBuffer, Int?)
        do {
            (body, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: binary)
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("cannot encode the request: \(error)", cause: error)
        }
        var headers = [("Content-Type", binary ? "application/octet-stream" : "application/json")]
        if let headerLength { headers.append(("Inference-Header-Content-Length", String(headerLength))) }
        let reply = try await send(.POST, Self.modelPath(request.modelName, version: request.modelVersion) + "/infer", headers: headers, body: body)
        try Self.check(reply)
        do {
            let length = reply.headers["Inference-Header-Content-Length"].first.flatMap { Int($0) }
            return try KServeHTTPEncoding.response(body: reply.body, headerLength: length)
        } catch let error as TernError {
            throw .unavailable("unreadable response from \(host):\(port): \(error.message)")
        } catch {
            throw .unavailable("unreadable response from \(host):\(port): \(error)")
        }
    }

    /// A model's metadata as the JSON object the server sent.
    public func metadata(model: String, version: Int64? = nil) async throws(TernError) -> [String: Any] {
        try await getObject(Self.modelPath(model, version: version))
    }

    /// A model's configuration as the JSON object the server sent.
    public func config(model: String, version: Int64? = nil) async throws(TernError) -> [String: Any] {
        try await getObject(Self.modelPath(model, version: version) + "/config")
    }

    /// A model's inputs and outputs, from its metadata.
    public func signature(model: String, version: Int64? = nil) async throws(TernError) -> ModelSignature {
        let object = try await metadata(model: model, version: version)
        func specs(_ key: String) throws(TernError) -> [TensorSpec] {
            try ((object[key] as? [[String: Any]]) ?? []).map { entry throws(TernError) in
                guard let name = entry["name"] as? String, let type = (entry["datatype"] as? String).flatMap(DataType.init(protocolName:)),
                    let shape = entry["shape"] as? [NSNumber]
                else { throw .unavailable("model '\(model)' at \(host):\(port): malformed metadata entry \(entry)") }
                return TensorSpec(name: name, dataType: type, shape: shape.map(\.int64Value))
            }
        }
        return ModelSignature(inputs: try specs("inputs"), outputs: try specs("outputs"))
    }

    /// GET `path`, expecting 200 and a JSON object.
    public func getObject(_ path: String) async throws(TernError) -> [String: Any] {
        let reply = try await send(.GET, path)
        try Self.check(reply)
        guard let object = reply.jsonObject else { throw .unavailable("\(host):\(port) answered GET \(path) with no JSON object") }
        return object
    }

    /// `/v2/models/NAME[/versions/V]`.
    public static func modelPath(_ model: String, version: Int64?) -> String {
        "/v2/models/\(model)" + (version.map { "/versions/\($0)" } ?? "")
    }

    /// Throws the error a non-200 answer stands for.
    public static func check(_ reply: Reply) throws(TernError) {
        guard reply.status != 200 else { return }
        let message = reply.errorMessage + " (HTTP \(reply.status))"
        switch reply.status {
        case 400: throw .invalidArgument(message)
        case 401, 403: throw .permissionDenied(message)
        case 404: throw .notFound(message)
        default: throw .unavailable(message)
        }
    }

    /// Why one attempt failed, and whether another may succeed.
    struct AttemptFailure: Error {
        var error: TernError
        var retryable: Bool
        /// It failed on a kept-alive connection before anything was read: the server most likely
        /// closed it while idle.
        var staleConnection = false
    }

    /// One exchange on a kept-alive connection (or a new one).
    private func attempt(_ method: HTTPMethod, _ path: String, headers extra: [(String, String)], body: ByteBuffer?) async throws(AttemptFailure) -> Reply {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        for (name, value) in options.headers + extra { head.headers.add(name: name, value: value) }

        let reused = idle.withLock { connections -> PooledHTTPConnection? in
            while let connection = connections.popLast() {
                if connection.channel.isActive { return connection }
            }
            return nil
        }
        let connection: PooledHTTPConnection
        if let reused {
            connection = reused
        } else {
            connection = try await connect()
        }
        let channel = connection.channel
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        let timedOut = Atomic(false)
        let timeout = options.timeout
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            timedOut.store(true, ordering: .relaxed)
            promise.fail(HTTPExchangeError(reason: "timed out", receivedNothing: false))
            channel.close(promise: nil)
        }
        // A write that never reaches the handler (the connection closed first, e.g. a server that
        // refused the client's certificate after the handshake) fails the exchange too, with the
        // reason the connection closed if one is known; a promise completed twice keeps its first outcome.
        channel.writeAndFlush(HTTPCall(head: head, body: body, reply: promise)).whenFailure { error in
            promise.fail(HTTPExchangeError(reason: connection.closeReason ?? "\(error)", receivedNothing: true))
        }
        let reply: Reply
        do {
            reply = try await promise.futureResult.get()
            timer.cancel()
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            if timedOut.load(ordering: .relaxed) {
                throw AttemptFailure(error: .unavailable("\(host):\(port) did not answer within \(timeout)"), retryable: true)
            }
            let receivedNothing = (error as? HTTPExchangeError)?.receivedNothing == true
            var reason = "\(host):\(port): \(error)"
            if reused == nil, receivedNothing, tls != nil, options.tls?.certificateChain.isEmpty != false {
                // TLS 1.3 servers check a client certificate after the client considers the
                // handshake done: a refusal shows up as a connection closed before any answer.
                reason += " (the server closed the new TLS connection before answering; if it requires a client certificate, give one)"
            }
            throw AttemptFailure(error: .unavailable(reason), retryable: true, staleConnection: reused != nil && receivedNothing)
        }
        if reply.headers["connection"].contains(where: { $0.lowercased() == "close" }) {
            channel.close(promise: nil)
        } else {
            idle.withLock { $0.append(connection) }
        }
        return reply
    }

    /// A new connection, TLS handshake done (so that a refused certificate is reported as such).
    private func connect() async throws(AttemptFailure) -> PooledHTTPConnection {
        let tls = self.tls
        let serverName = self.serverName
        let loop = group.next()
        let ready = loop.makePromise(of: Void.self)
        let note = HTTPConnectionNote()
        let timeout = options.timeout
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(Int64(timeout.nanoseconds)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPExchangeHandler(ready: ready, waitsForTLS: tls != nil, note: note))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            ready.fail(error)
            throw AttemptFailure(error: .unavailable("cannot connect to \(host):\(port) (\(Self.reason(error)))"), retryable: true)
        }
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.nanoseconds))) {
            ready.fail(HTTPExchangeError(reason: "the TLS handshake timed out", receivedNothing: true))
        }
        do {
            try await ready.futureResult.get()
            timer.cancel()
            return PooledHTTPConnection(channel: channel, note: note)
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            throw AttemptFailure(error: .unavailable("\(host):\(port): TLS handshake failed: \(error)"), retryable: true)
        }
    }

    /// `Connection refused` rather than NIO's whole description.
    static func reason(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return reason(first.error) }
            return error.dnsAError.map { "cannot resolve the name: \($0)" } ?? "no address"
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if case ChannelError.connectTimeout(let after) = error { return "timed out after \(after)" }
        return "\(error)"
    }

    // MARK: Blocking mode

    /// A blocking caller that repeats one POST of `body` to `path` on its own connection (see
    /// `BlockingCaller`). Plain HTTP only; `options.headers` are sent too.
    public func blockingCaller(path: String, headers: [(String, String)], body: [UInt8], freshIDs: Bool = false) throws -> BlockingCaller {
        guard options.tls == nil else { throw TernError.invalidArgument("the blocking mode speaks plain HTTP only") }
        return try BlockingCaller(host: host, port: port, path: path, headers: options.headers + headers, body: body, freshIDs: freshIDs)
    }

    /// The blocking mode: one request (head and body) encoded once and written with one call per
    /// repetition; the answer's status line and Content-Length are parsed and the body skipped
    /// unless the status is an error. Used from one thread.
    public final class BlockingCaller {
        private let socket: BlockingSocket
        private var request: [UInt8]
        /// Where the request's id lies when each call gets a fresh one (`idPlaceholder` was encoded).
        private let idOffset: Int?
        private var random = SystemRandomNumberGenerator()

        /// An id that a request is encoded with when every call should carry a random one of its length.
        public static let idPlaceholder = "tern-perf-request-id-placeholder"

        /// Connects to `host:port` and encodes the POST of `body` to `path` with `headers`;
        /// `freshIDs`: the body was encoded with `idPlaceholder` as the request's id, and each call
        /// replaces it with a random one.
        public init(host: String, port: Int, path: String, headers: [(String, String)], body: [UInt8], freshIDs: Bool = false) throws {
            socket = try BlockingSocket(host: host, port: port)
            var head = "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: \(body.count)\r\n"
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            head += "\r\n"
            let bytes = Array(head.utf8) + body
            let marker = Array("\"\(Self.idPlaceholder)\"".utf8)
            idOffset = freshIDs ? bytes.firstRange(of: marker).map { $0.lowerBound + 1 } : nil
            if freshIDs && idOffset == nil { throw WireCallError("the encoded request has no id to replace") }
            request = bytes
        }

        /// Sends the request once; returns the status code and the body (kept only on an error status).
        @discardableResult
        public func roundTrip() throws -> (status: Int, errorBody: String?) {
            if let idOffset {
                // 32 random hex digits in place of the placeholder (lengths, and so headers, unchanged).
                let hex: StaticString = "0123456789abcdef"
                for half in 0..<2 {
                    let bits = random.next()
                    for digit in 0..<16 { request[idOffset + half * 16 + digit] = hex.utf8Start[Int((bits >> UInt64(4 * digit)) & 15)] }
                }
            }
            try socket.write(request)
            let head = try HTTP1ResponseHead.read(from: socket)
            let body = try socket.consume(try head.contentLength()) { raw in head.status == 200 ? nil : String(decoding: raw, as: UTF8.self) }
            return (head.status, body)
        }
    }
}
