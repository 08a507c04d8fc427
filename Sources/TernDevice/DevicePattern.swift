import Foundation
import ServiceLifecycle
import TernRuntime

/// Device telemetry and the thermal/power policy as a server pattern: the monitor runs as a
/// service (readings, metrics, policy actions) and its latest snapshot is the `/device/stats`
/// page of the metrics port (API group `device`); with NVML, Triton's GPU metric families too.
public struct DevicePattern: ServerPattern {
    /// The monitor that reads the device and applies the policy.
    public let monitor: DeviceMonitor
    /// NVML's GPU metrics, on a machine with a discrete NVIDIA GPU.
    public let gpu: GPUMetrics?

    /// The pattern of `monitor` (and `gpu`).
    public init(monitor: DeviceMonitor, gpu: GPUMetrics? = nil) {
        self.monitor = monitor
        self.gpu = gpu
    }

    /// `device`.
    public var name: String { "device" }
    /// `/device/stats`.
    public var metricsPages: [MetricsPage] {
        let monitor = self.monitor
        return [MetricsPage(path: "/device/stats", group: "device") { monitor.snapshotJSON() }]
    }
    /// The monitor, and the GPU metrics when NVML is present.
    public var services: [any Service] { [monitor] + (gpu.map { [$0] } ?? []) }
}
