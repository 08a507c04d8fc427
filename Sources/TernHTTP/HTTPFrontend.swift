import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import TernCore
import TernMetrics
import TernRuntime

/// The HTTP servers Tern runs: the KServe v2 API and the Prometheus metrics endpoint on its own
/// port. Both are `Service`s for the caller's ServiceGroup.
public enum HTTPFrontend {
    /// The inference API on `host:port`. `onRunning` receives the bound port (useful with port 0).
    /// `extensions` add routes under prefixes of their own; request headers whose whole name
    /// matches `headerForwardPattern` (a regular expression, as Triton's
    /// `--http-header-forward-pattern`) reach the model as request parameters.
    public static func server(
        engine: InferenceServer, host: String, port: Int, maxBodySize: Int = 256 << 20, extensions: [HTTPExtensionRoutes] = [],
        headerForwardPattern: String? = nil, logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> any Service {
        var api = KServeHTTPAPI(server: engine, extensions: extensions)
        if let headerForwardPattern {
            do {
                api.headerForwardPattern = try NSRegularExpression(pattern: headerForwardPattern, options: [.caseInsensitive])
            } catch {
                throw TernError.invalidArgument("header forward pattern '\(headerForwardPattern)': \(error)")
            }
        }
        return HTTPServer(host: host, port: port, maxBodySize: maxBodySize, responder: api, logger: logger, onRunning: onRunning)
    }

    /// `GET /metrics` in Prometheus text format, plus `jsonRoutes`: paths (e.g. `/device/stats`)
    /// answered with the JSON their closure returns.
    public static func metricsServer(
        exporter: PrometheusExporter, host: String, port: Int, jsonRoutes: [String: @Sendable () -> String] = [:], logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> any Service {
        HTTPServer(
            host: host, port: port, maxBodySize: 1 << 16, responder: MetricsResponder(exporter: exporter, jsonRoutes: jsonRoutes),
            logger: logger, onRunning: onRunning)
    }
}

/// Serves the Prometheus exposition and the JSON routes.
struct MetricsResponder: HTTPResponder {
    let exporter: PrometheusExporter
    let jsonRoutes: [String: @Sendable () -> String]

    func answer(_ request: HTTPRequestData) -> HTTPAnswer {
        let path = request.path.split(separator: "?").first.map(String.init) ?? ""
        if request.method == .GET, let route = jsonRoutes[path] {
            return .now(HTTPReply(status: .ok, headers: [("Content-Type", "application/json")], body: ByteBuffer(string: route())))
        }
        guard request.method == .GET, path == "/metrics" else {
            let paths = (["/metrics"] + jsonRoutes.keys.sorted()).joined(separator: ", ")
            return .now(HTTPReply(status: .notFound, headers: [("Content-Type", "text/plain")], body: ByteBuffer(string: "try \(paths)\n")))
        }
        return .now(HTTPReply(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4")], body: ByteBuffer(string: exporter.render())))
    }
}
