import Foundation
import Synchronization

/// Reads the live state of the machine from sysfs and procfs: CPU load and frequency per core
/// (`/proc/stat`, `cpufreq`), memory (`/proc/meminfo`), thermal zones, the Jetson GPU's load and
/// frequency (`load` per mille, devfreq `cur_freq`) and INA3221 power rails (hwmon).
///
/// Every path is read under `root`, so tests point it at a recorded tree. On a machine that is
/// not a Jetson the generic parts still work and the rest is listed in `unavailable`.
/// CPU load is busy time between two readings: the first reading has none.
public final class SystemTelemetry: Sendable {
    /// The folder the sysfs and procfs paths are read under, ending in "/" ("/" on a live machine).
    public let root: String
    private let previousCPU = Mutex<[Int: CPUTimes]>([:])

    struct CPUTimes: Equatable {
        var busy: UInt64
        var total: UInt64
    }

    /// Makes a reader of the files under `root` (a "/" is added when missing).
    public init(root: String = "/") {
        self.root = root.hasSuffix("/") ? root : root + "/"
    }

    /// One reading of CPUs, memory, thermal zones, GPU and power rails; the CPU loads are busy time since the previous
    /// call.
    public func read() -> DeviceStats {
        var stats = DeviceStats()
        readCPUs(into: &stats)
        readMemory(into: &stats)
        readThermalZones(into: &stats)
        readGPU(into: &stats)
        readPowerRails(into: &stats)
        return stats
    }

    /// Free RAM in bytes (`MemAvailable`): on a Jetson the GPU allocates from the same RAM, so
    /// this is what a model load can really use.
    public func availableMemoryBytes() -> UInt64? {
        guard let text = text("proc/meminfo") else { return nil }
        return Self.meminfo(text)["MemAvailable"]
    }

    // MARK: CPU

    private func readCPUs(into stats: inout DeviceStats) {
        guard let procStat = text("proc/stat") else {
            stats.unavailable.append("cpu: cannot read /proc/stat")
            return
        }
        let times = Self.perCoreTimes(procStat)
        let present = Set(coreDirectories()).union(times.keys)
        let previous = previousCPU.withLock { previous in
            defer { previous = times }
            return previous
        }
        for index in present.sorted() {
            // An offline core has no line in /proc/stat; sysfs says so too (`online` = 0).
            let onlineFlag = text("sys/devices/system/cpu/cpu\(index)/online")?.trimmingCharacters(in: .whitespacesAndNewlines)
            let online = times[index] != nil && onlineFlag != "0"
            var core = DeviceStats.CPUCore(index: index, online: online)
            if online, let now = times[index], let before = previous[index], now.total > before.total {
                core.loadPercent = Double(now.busy &- before.busy) / Double(now.total - before.total) * 100
            }
            if online, let khz = number("sys/devices/system/cpu/cpu\(index)/cpufreq/scaling_cur_freq") {
                core.frequencyMHz = khz / 1000
            }
            stats.cpus.append(core)
        }
    }

    /// `cpuN user nice system idle iowait irq softirq steal ...` → busy and total jiffies.
    static func perCoreTimes(_ text: String) -> [Int: CPUTimes] {
        var result: [Int: CPUTimes] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("cpu") && !line.hasPrefix("cpu ") {
            let fields = line.split(separator: " ")
            guard let index = Int(fields[0].dropFirst(3)) else { continue }
            let values = fields.dropFirst().compactMap { UInt64($0) }
            guard values.count >= 4 else { continue }
            // guest and guest_nice (fields 9, 10) are already counted in user and nice.
            let counted = values.prefix(8)
            let idle = counted[3] + (counted.count > 4 ? counted[4] : 0)
            let total = counted.reduce(0, +)
            result[index] = CPUTimes(busy: total - idle, total: total)
        }
        return result
    }

    private func coreDirectories() -> [Int] {
        entries("sys/devices/system/cpu").compactMap { name in
            name.hasPrefix("cpu") ? Int(name.dropFirst(3)) : nil
        }
    }

    // MARK: Memory

    private func readMemory(into stats: inout DeviceStats) {
        guard let text = text("proc/meminfo") else {
            stats.unavailable.append("memory: cannot read /proc/meminfo")
            return
        }
        let values = Self.meminfo(text)
        guard let total = values["MemTotal"] else {
            stats.unavailable.append("memory: /proc/meminfo has no MemTotal")
            return
        }
        let available = values["MemAvailable"] ?? ((values["MemFree"] ?? 0) + (values["Cached"] ?? 0))
        var memory = DeviceStats.Memory(totalBytes: total, usedBytes: total - min(total, available), availableBytes: available)
        if let swapTotal = values["SwapTotal"] {
            memory.swapTotalBytes = swapTotal
            memory.swapUsedBytes = swapTotal - min(swapTotal, values["SwapFree"] ?? swapTotal)
            memory.swapCachedBytes = values["SwapCached"]
        }
        stats.memory = memory
    }

    /// `Name:   1234 kB` lines → bytes by name.
    static func meminfo(_ text: String) -> [String: UInt64] {
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, parts[0].hasSuffix(":"), let amount = UInt64(parts[1]) else { continue }
            let scale: UInt64 = parts.count >= 3 && parts[2] == "kB" ? 1024 : 1
            values[String(parts[0].dropLast())] = amount * scale
        }
        return values
    }

    // MARK: Thermal zones

    private func readThermalZones(into stats: inout DeviceStats) {
        let base = "sys/devices/virtual/thermal"
        let zones = entries(base).filter { $0.hasPrefix("thermal_zone") }
            .sorted { (Int($0.dropFirst(12)) ?? 0) < (Int($1.dropFirst(12)) ?? 0) }
        guard !zones.isEmpty else {
            stats.unavailable.append("temperature: no thermal zones under /sys/devices/virtual/thermal")
            return
        }
        for zone in zones {
            let name = text("\(base)/\(zone)/type")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? zone
            // Reading an offline sensor fails, or gives -256 °C on Jetson.
            let milli = number("\(base)/\(zone)/temp")
            let celsius = milli.map { $0 / 1000 }.flatMap { $0 <= -255 ? nil : $0 }
            stats.temperatures.append(.init(name: name, celsius: celsius))
        }
    }

    // MARK: GPU

    /// Jetson GPU devfreq devices: `17000000.gpu` (Orin), `17000000.gv11b` (Xavier), `57000000.gpu` (Nano).
    private static let gpuDevfreqMarkers = ["gpu", "gv11b", "gp10b", "ga10b", "gm20b", "gb10b"]

    private func readGPU(into stats: inout DeviceStats) {
        let devfreq = entries("sys/class/devfreq").sorted().first { name in
            Self.gpuDevfreqMarkers.contains { name.hasSuffix("." + $0) || name == $0 }
        }.map { "sys/class/devfreq/\($0)" }
        var loadPaths = ["sys/devices/gpu.0/load", "sys/devices/platform/gpu.0/load"]
        if let devfreq { loadPaths.insert("\(devfreq)/device/load", at: 0) }
        loadPaths += entries("sys/devices/platform/bus@0").filter { $0.hasSuffix(".gpu") }.map { "sys/devices/platform/bus@0/\($0)/load" }
        let load = loadPaths.lazy.compactMap { self.number($0) }.first
        let hertz = devfreq.flatMap { number("\($0)/cur_freq") }
        guard load != nil || hertz != nil else {
            stats.unavailable.append("gpu: no Jetson GPU load file or GPU devfreq entry (not a Jetson?)")
            return
        }
        var gpu = DeviceStats.Engine(name: "GPU")
        gpu.loadPercent = load.map { $0 / 10 }  // per mille
        if let hertz { gpu.frequenciesMHz = [hertz / 1_000_000] }
        stats.gpu = gpu
    }

    // MARK: Power rails

    private func readPowerRails(into stats: inout DeviceStats) {
        var found = false
        for monitor in entries("sys/class/hwmon").sorted() {
            let base = "sys/class/hwmon/\(monitor)"
            guard let name = text("\(base)/name")?.trimmingCharacters(in: .whitespacesAndNewlines), name == "ina3221" else { continue }
            found = true
            let channels = entries(base).compactMap { file -> Int? in
                guard file.hasPrefix("in"), file.hasSuffix("_label") else { return nil }
                return Int(file.dropFirst(2).dropLast(6))
            }.sorted()
            for channel in channels {
                guard let label = text("\(base)/in\(channel)_label")?.trimmingCharacters(in: .whitespacesAndNewlines),
                    let millivolts = number("\(base)/in\(channel)_input"),
                    let milliamperes = number("\(base)/curr\(channel)_input")
                else { continue }  // e.g. the "sum of shunt voltages" channel has no current
                var rail = DeviceStats.PowerRail(name: label, milliwatts: millivolts * milliamperes / 1000)
                rail.voltageMillivolts = millivolts
                rail.currentMilliamperes = milliamperes
                stats.rails.append(rail)
            }
        }
        if !found { stats.unavailable.append("power: no INA3221 power monitor under /sys/class/hwmon") }
    }

    // MARK: Files

    private func text(_ path: String) -> String? {
        try? String(contentsOfFile: root + path, encoding: .utf8)
    }

    private func number(_ path: String) -> Double? {
        text(path).flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    private func entries(_ path: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: root + path)) ?? []
    }
}
