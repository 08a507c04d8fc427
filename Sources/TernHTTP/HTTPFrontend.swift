import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import TernCore
import TernMetrics
import TernRuntime
import TernTLS

/// The HTTP servers Tern runs: the KServe v2 API and the Prometheus metrics endpoint on its own
/// port. Both are `Service`s for the caller's ServiceGroup.
public enum HTTPFrontend {
    /// The inference API on `host:port`. `onRunning` receives the bound port (useful with port 0).
    /// `tls` serves HTTPS (ALPN http/1.1); `extensions` add routes under prefixes of their own; request headers whose whole name
    /// matches `headerForwardPattern` (a regular expression, as Triton's
    /// `--http-header-forward-pattern`) reach the model as request parameters.
    public static func server(
        engine: InferenceServer, host: String, port: Int, maxBodySize: Int = 256 << 20, extensions: [HTTPExtensionRoutes] = [],
        headerForwardPattern: String? = nil, limits: ConnectionLimits = ConnectionLimits(), access: APIAccessPolicy = .open,
        tls: ServerTLS? = nil, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> HTTPServerService {
        var api = KServeHTTPAPI(server: engine, extensions: extensions, access: access)
        api.maxRequestSize = maxBodySize
        if let headerForwardPattern {
            do {
                api.headerForwardPattern = try NSRegularExpression(pattern: headerForwardPattern, options: [.caseInsensitive])
            } catch {
                throw TernError.invalidArgument("header forward pattern '\(headerForwardPattern)': \(error)")
            }
        }
        return HTTPServerService(
            server: HTTPServer(host: host, port: port, maxBodySize: maxBodySize, limits: limits, tls: tls, responder: api, logger: logger, onRunning: onRunning))
    }

    /// `GET /metrics` in Prometheus text format, plus `jsonRoutes`: paths (e.g. `/device/stats`)
    /// answered with the JSON their closure returns, each in an API group `access` may restrict.
    public static func metricsServer(
        exporter: PrometheusExporter, host: String, port: Int, jsonRoutes: [String: (group: String, answer: @Sendable () -> String)] = [:],
        limits: ConnectionLimits = ConnectionLimits(), access: APIAccessPolicy = .open, tls: ServerTLS? = nil, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> HTTPServerService {
        HTTPServerService(server: HTTPServer(
            role: "metrics", host: host, port: port, maxBodySize: 1 << 16, limits: limits, tls: tls,
            responder: MetricsResponder(exporter: exporter, jsonRoutes: jsonRoutes, access: access),
            logger: logger, onRunning: onRunning))
    }
}

/// One of Tern's HTTP listeners as a ServiceLifecycle `Service`. Its listener closes on graceful
/// shutdown; `drainConnections` then lets the open connections finish (see `DrainableFrontend`).
public struct HTTPServerService: Service, DrainableFrontend {
    let server: HTTPServer

    /// What this listener serves, for the shutdown's log: "HTTP" for the inference API, "metrics"
    /// for the metrics endpoint.
    public var role: String { server.role }

    /// Every connection answers the requests it has read (the last answer says `Connection:
    /// close`) and closes; idle ones close at once.
    public func drainConnections(timeout: Duration) async -> Int { await server.connections.drain(timeout: timeout) }

    /// Opens the listening socket now (it is opened by `run` otherwise) and returns the bound
    /// port; throws naming the address when it is taken.
    @discardableResult
    public func bind() async throws(TernError) -> Int { try await server.bind() }

    /// Opens the listening socket unless `bind` has, reports the bound port to `onRunning`, and
    /// serves until graceful shutdown closes the listener.
    public func run() async throws { try await server.run() }
}

/// Serves the Prometheus exposition and the JSON routes.
struct MetricsResponder: HTTPResponder {
    let exporter: PrometheusExporter
    let jsonRoutes: [String: (group: String, answer: @Sendable () -> String)]
    let access: APIAccessPolicy

    func answer(_ request: HTTPRequestData) -> HTTPAnswer {
        let path = request.path.split(separator: "?").first.map(String.init) ?? ""
        if let route = jsonRoutes[path] {
            guard request.method == .GET else { return .now(.methodNotAllowed(allow: "GET")) }
            if let refusal = access.refusal(group: route.group, header: { request.headers.first(name: $0) }) {
                return .now(.error(refusal))
            }
            return .now(HTTPReply(status: .ok, headers: [("Content-Type", "application/json")], body: ByteBuffer(string: route.answer())))
        }
        if path == "/metrics", request.method != .GET { return .now(.methodNotAllowed(allow: "GET")) }
        guard request.method == .GET, path == "/metrics" else {
            let paths = (["/metrics"] + jsonRoutes.keys.sorted()).joined(separator: ", ")
            return .now(HTTPReply(status: .notFound, headers: [("Content-Type", "text/plain")], body: ByteBuffer(string: "try \(paths)\n")))
        }
        return .now(HTTPReply(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4")], body: ByteBuffer(string: exporter.render())))
    }
}
