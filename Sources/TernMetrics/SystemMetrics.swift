import Foundation
import Synchronization

/// Fraction of CPU time spent busy since the previous sample, from /proc/stat.
final class CPUSampler: Sendable {
    private let previous = Mutex<(busy: UInt64, total: UInt64)?>(nil)

    func sample() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard fields.count >= 4 else { return nil }
        let idle = fields[3] + (fields.count > 4 ? fields[4] : 0)
        let total = fields.reduce(0, +)
        let busy = total - idle
        return previous.withLock { last in
            defer { last = (busy, total) }
            guard let last, total > last.total else { return nil }
            return Double(busy - last.busy) / Double(total - last.total)
        }
    }
}

/// Total and available memory in bytes, from /proc/meminfo.
enum SystemMemory {
    static func read() -> (total: UInt64, available: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        var values: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kib = UInt64(parts[1]) else { continue }
            values[String(parts[0].dropLast())] = kib * 1024
        }
        guard let total = values["MemTotal"], let available = values["MemAvailable"] else { return nil }
        return (total, available)
    }
}
