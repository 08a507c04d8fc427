import Foundation
import TernDevice

/// Renders device readings for a terminal: a block per reading (`tern device stats`) or one line
/// per reading (`--tegrastats-log`).
enum DeviceStatsText {
    static func block(_ s: DeviceStats) -> String {
        var lines: [String] = []
        if let timestamp = s.timestamp { lines.append("time   \(timestamp)") }
        if !s.cpus.isEmpty {
            let cores = s.cpus.map { core -> String in
                guard core.online else { return "\(core.index): off" }
                let load = core.loadPercent.map { String(format: "%.0f%%", $0) } ?? "-"
                let mhz = core.frequencyMHz.map { String(format: "@%.0fMHz", $0) } ?? ""
                return "\(core.index): \(load)\(mhz)"
            }
            lines.append("cpu    " + cores.joined(separator: "  "))
        }
        if let m = s.memory {
            var text = m.totalBytes > 0 ? "\(mb(m.usedBytes))/\(mb(m.totalBytes)) MB used" : ""
            if let available = m.availableBytes { text += ", \(mb(available)) MB available" }
            if let total = m.swapTotalBytes { text += "; swap \(mb(m.swapUsedBytes ?? 0))/\(mb(total)) MB" }
            if let blocks = m.largestFreeBlocks, let size = m.largestFreeBlockBytes { text += "; lfb \(blocks)x\(mb(size))MB" }
            lines.append("memory " + text)
        }
        if let gpu = s.gpu { lines.append("gpu    " + engine(gpu)) }
        if let emc = s.emc { lines.append("emc    " + engine(emc)) }
        if !s.engines.isEmpty {
            lines.append("engine " + s.engines.map { "\($0.name) \(engine($0))" }.joined(separator: "  "))
        }
        if !s.temperatures.isEmpty {
            lines.append("temp   " + s.temperatures.map { t in
                "\(t.name) " + (t.celsius.map { String(format: "%.1f°C", $0) } ?? "offline")
            }.joined(separator: "  "))
        }
        if !s.rails.isEmpty {
            var text = s.rails.map { r in r.connected ? String(format: "%@ %.0fmW", r.name, r.milliwatts) : "\(r.name) -" }.joined(separator: "  ")
            if let total = s.totalMilliwatts { text += String(format: "  (total %.0f mW)", total) }
            lines.append("power  " + text)
        }
        for reason in s.unavailable { lines.append("n/a    " + reason) }
        return lines.joined(separator: "\n")
    }

    static func line(_ s: DeviceStats, number: Int) -> String {
        var parts = ["line \(number)"]
        if let timestamp = s.timestamp { parts.append(timestamp) }
        if let load = s.cpuLoadPercent {
            parts.append(String(format: "cpu %.0f%% (%d/%d on)", load, s.cpus.filter(\.online).count, s.cpus.count))
        }
        if let m = s.memory, m.totalBytes > 0 { parts.append("ram \(mb(m.usedBytes))/\(mb(m.totalBytes))MB") }
        if let gpu = s.gpu { parts.append("gpu " + engine(gpu)) }
        if let hottest = s.hottestCelsius,
            let name = s.temperatures.first(where: { $0.celsius == hottest })?.name
        {
            parts.append(String(format: "hottest %@ %.1f°C", name, hottest))
        }
        if let total = s.totalMilliwatts { parts.append(String(format: "power %.0fmW", total)) }
        return parts.joined(separator: "  ")
    }

    private static func engine(_ e: DeviceStats.Engine) -> String {
        guard e.active else { return "off" }
        var text = e.loadPercent.map { String(format: "%.0f%%", $0) } ?? ""
        if !e.frequenciesMHz.isEmpty {
            text += "@" + e.frequenciesMHz.map { String(format: "%.0f", $0) }.joined(separator: ",") + "MHz"
        }
        return text
    }

    private static func mb(_ bytes: UInt64) -> UInt64 { bytes >> 20 }
}
