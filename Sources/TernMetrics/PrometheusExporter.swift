import CoreMetrics
import Foundation
import Prometheus

/// Collects the engine's swift-metrics series in a Prometheus registry and renders them in the
/// Prometheus text format, together with Triton's CPU and memory gauges (refreshed per scrape).
public final class PrometheusExporter: Sendable {
    /// The Prometheus registry that holds every series this exporter renders.
    public let registry: PrometheusCollectorRegistry
    private let cpuUtilization: CoreMetrics.Gauge
    private let memoryTotal: CoreMetrics.Gauge
    private let memoryUsed: CoreMetrics.Gauge
    private let cpuSampler = CPUSampler()

    /// Makes an exporter on `registry` and registers Triton's CPU utilisation and memory gauges there.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let factory = PrometheusMetricsFactory(registry: registry)
        cpuUtilization = CoreMetrics.Gauge(label: "nv_cpu_utilization", dimensions: [], factory: factory)
        memoryTotal = CoreMetrics.Gauge(label: "nv_cpu_memory_total_bytes", dimensions: [], factory: factory)
        memoryUsed = CoreMetrics.Gauge(label: "nv_cpu_memory_used_bytes", dimensions: [], factory: factory)
    }

    /// A swift-metrics factory writing into this exporter's registry; pass it to
    /// `MetricsSystem.bootstrap` once per process.
    public var factory: any MetricsFactory { PrometheusMetricsFactory(registry: registry) }

    /// The current metrics in Prometheus text format.
    public func render() -> String {
        if let utilization = cpuSampler.sample() { cpuUtilization.record(utilization) }
        if let memory = SystemMemory.read() {
            memoryTotal.record(Double(memory.total))
            memoryUsed.record(Double(memory.total - memory.available))
        }
        return registry.emitToString()
    }
}
