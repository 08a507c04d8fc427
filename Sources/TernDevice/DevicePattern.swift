import Foundation
import ServiceLifecycle
import TernRuntime

/// Device telemetry and the thermal/power policy as a server pattern: the monitor runs as a
/// service (readings, metrics, policy actions) and its latest snapshot is the `/device/stats`
/// page of the metrics port (API group `device`).
public struct DevicePattern: ServerPattern {
    /// The monitor that reads the device and applies the policy.
    public let monitor: DeviceMonitor

    /// The pattern of `monitor`.
    public init(monitor: DeviceMonitor) {
        self.monitor = monitor
    }

    /// `device`.
    public var name: String { "device" }
    /// `/device/stats`.
    public var metricsPages: [MetricsPage] {
        let monitor = self.monitor
        return [MetricsPage(path: "/device/stats", group: "device") { monitor.snapshotJSON() }]
    }
    /// The monitor.
    public var services: [any Service] { [monitor] }
}
