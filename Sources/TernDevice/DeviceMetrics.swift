import CoreMetrics

/// Writes a `DeviceStats` reading into swift-metrics gauges, which the Prometheus exporter serves
/// on the metrics port. Names start with `tern_device_`; the GPU's utilization is also exported as
/// Triton's `nv_gpu_utilization` (which Triton cannot report on Jetson), so Triton dashboards
/// show it. Offline sensors and unconnected rails are left out rather than reported as zero.
public struct DeviceMetrics: Sendable {
    let factory: any MetricsFactory

    /// Makes a recorder that creates its gauges with `factory` (the process's metrics system by default).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    /// Sets the `tern_device_*` gauges (and `nv_gpu_utilization`) from one reading, skipping what it does not hold.
    public func record(_ stats: DeviceStats) {
        for core in stats.cpus {
            let labels = [("core", String(core.index))]
            gauge("tern_device_cpu_online", labels, core.online ? 1 : 0)
            if let load = core.loadPercent { gauge("tern_device_cpu_utilization", labels, load / 100) }
            if let mhz = core.frequencyMHz { gauge("tern_device_cpu_frequency_mhz", labels, mhz) }
        }
        if let memory = stats.memory {
            if memory.totalBytes > 0 {
                gauge("tern_device_memory_total_bytes", [], Double(memory.totalBytes))
                gauge("tern_device_memory_used_bytes", [], Double(memory.usedBytes))
            }
            if let available = memory.availableBytes { gauge("tern_device_memory_available_bytes", [], Double(available)) }
            if let total = memory.swapTotalBytes { gauge("tern_device_swap_total_bytes", [], Double(total)) }
            if let used = memory.swapUsedBytes { gauge("tern_device_swap_used_bytes", [], Double(used)) }
        }
        if let gpu = stats.gpu {
            if let load = gpu.loadPercent {
                gauge("tern_device_gpu_utilization", [], load / 100)
                gauge("nv_gpu_utilization", [("gpu_uuid", "tegra-igpu")], load / 100)
            }
            for (domain, mhz) in gpu.frequenciesMHz.enumerated() {
                gauge("tern_device_gpu_frequency_mhz", [("domain", String(domain))], mhz)
            }
        }
        for engine in ([stats.emc].compactMap { $0 } + stats.engines) {
            let labels = [("engine", engine.name)]
            gauge("tern_device_engine_active", labels, engine.active ? 1 : 0)
            if let load = engine.loadPercent { gauge("tern_device_engine_utilization", labels, load / 100) }
            if let mhz = engine.frequenciesMHz.first { gauge("tern_device_engine_frequency_mhz", labels, mhz) }
        }
        for (name, sensor) in Self.uniqueNames(stats.temperatures.map(\.name)).enumerated().map({ ($1, stats.temperatures[$0]) }) {
            if let celsius = sensor.celsius { gauge("tern_device_temperature_celsius", [("sensor", name)], celsius) }
        }
        let rails = stats.rails.filter(\.connected)
        for (name, rail) in Self.uniqueNames(rails.map(\.name)).enumerated().map({ ($1, rails[$0]) }) {
            gauge("tern_device_power_milliwatts", [("rail", name)], rail.milliwatts)
        }
        if let total = stats.totalMilliwatts { gauge("tern_device_power_total_milliwatts", [], total) }
    }

    /// Names made unique by suffixing repeats (`acpitz`, `acpitz_1`), so series never collide.
    static func uniqueNames(_ names: [String]) -> [String] {
        var seen: [String: Int] = [:]
        return names.map { name in
            let count = seen[name, default: 0]
            seen[name] = count + 1
            return count == 0 ? name : "\(name)_\(count)"
        }
    }

    private func gauge(_ label: String, _ dimensions: [(String, String)], _ value: Double) {
        Gauge(label: label, dimensions: dimensions, factory: factory).record(value)
    }
}
