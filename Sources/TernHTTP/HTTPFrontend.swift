import Hummingbird
import Logging
import TernMetrics
import TernRuntime

/// Builds the Hummingbird applications Tern serves: the KServe v2 API and the Prometheus metrics
/// endpoint on its own port. Both are `Service`s for the caller's ServiceGroup.
public enum HTTPFrontend {
    /// The inference API on `host:port`. `onRunning` receives the bound port (useful with port 0).
    public static func application(
        server: InferenceServer, host: String, port: Int, maxBodySize: Int = 256 << 20, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        KServeHTTPRoutes(server: server, maxBodySize: maxBodySize).register(on: router)
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
    }

    /// `GET /metrics` in Prometheus text format on its own port.
    public static func metricsApplication(
        exporter: PrometheusExporter, host: String, port: Int, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: exporter.render())))
        }
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
    }
}
