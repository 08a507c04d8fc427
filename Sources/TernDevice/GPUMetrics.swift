import CoreMetrics
import Foundation
import Logging
import ServiceLifecycle

/// Reads every discrete GPU through NVML at an interval and exports Triton's GPU metric families,
/// labelled `gpu_uuid`: `nv_gpu_utilization` (0...1), `nv_gpu_memory_total_bytes`,
/// `nv_gpu_memory_used_bytes`, `nv_gpu_power_usage` and `nv_gpu_power_limit` (watts), and the
/// counter `nv_energy_consumption` (joules since the server started reading).
public final class GPUMetrics: Service, Sendable {
    private let nvml: NVML
    private let interval: Duration
    private let factory: any MetricsFactory
    private let logger: Logger

    /// Reads `nvml` every `interval`, recording through `factory`.
    public init(nvml: NVML, interval: Duration, factory: any MetricsFactory = MetricsSystem.factory, logger: Logger) {
        self.nvml = nvml
        self.interval = interval
        self.factory = factory
        self.logger = logger
    }

    /// Records readings until a graceful shutdown.
    public func run() async throws {
        logger.info("GPU metrics from NVML", metadata: ["library": .string(nvml.path), "gpus": .stringConvertible(nvml.read().count)])
        await cancelWhenGracefulShutdown {
            var energy = EnergyBooks()
            while !Task.isCancelled {
                self.record(self.nvml.read(), energy: &energy)
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// The energy counted so far per GPU, so the counter grows by what NVML's total grew by.
    struct EnergyBooks {
        var last: [String: Double] = [:]
    }

    func record(_ readings: [NVML.Reading], energy: inout EnergyBooks) {
        for reading in readings {
            let labels = [("gpu_uuid", reading.uuid)]
            func gauge(_ label: String, _ value: Double?) {
                guard let value else { return }
                Gauge(label: label, dimensions: labels, factory: factory).record(value)
            }
            gauge("nv_gpu_utilization", reading.utilization)
            gauge("nv_gpu_memory_total_bytes", reading.memoryTotalBytes.map { Double($0) })
            gauge("nv_gpu_memory_used_bytes", reading.memoryUsedBytes.map { Double($0) })
            gauge("nv_gpu_power_usage", reading.powerWatts)
            gauge("nv_gpu_power_limit", reading.powerLimitWatts)
            if let total = reading.energyJoules {
                let counter = FloatingPointCounter(label: "nv_energy_consumption", dimensions: labels, factory: factory)
                if let last = energy.last[reading.uuid] {
                    if total > last { counter.increment(by: total - last) }
                } else {
                    counter.increment(by: 0)  // the series exists from the first reading
                }
                energy.last[reading.uuid] = total
            }
        }
    }
}
