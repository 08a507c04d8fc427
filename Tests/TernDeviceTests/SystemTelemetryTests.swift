import Foundation
import Testing
@testable import TernDevice

/// The sysfs/procfs readers on recorded trees: an Orin-like one, and this machine.
@Suite struct SystemTelemetryTests {
    /// Writes `files` (path → content) under a new temporary root.
    static func tree(_ files: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tern-sysfs-\(UUID().uuidString)")
        for (path, content) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try content.write(to: url, atomically: true, encoding: .utf8)
        }
        return root.path
    }

    static let orinFiles: [String: String] = [
        "proc/stat": """
            cpu  400 0 200 1400 0 0 0 0 0 0
            cpu0 100 0 50 350 0 0 0 0 0 0
            cpu1 300 0 150 1050 0 0 0 0 0 0
            intr 1 2 3
            """,
        "proc/meminfo": """
            MemTotal:        7800000 kB
            MemFree:         1000000 kB
            MemAvailable:    5000000 kB
            Cached:          2000000 kB
            SwapCached:         1024 kB
            SwapTotal:       3900000 kB
            SwapFree:        3800000 kB
            """,
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "729600\n",
        "sys/devices/system/cpu/cpu1/online": "1\n",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq": "1510400\n",
        "sys/devices/system/cpu/cpu2/online": "0\n",
        "sys/devices/virtual/thermal/thermal_zone0/type": "cpu-thermal\n",
        "sys/devices/virtual/thermal/thermal_zone0/temp": "46531\n",
        "sys/devices/virtual/thermal/thermal_zone1/type": "gpu-thermal\n",
        "sys/devices/virtual/thermal/thermal_zone1/temp": "48218\n",
        "sys/devices/virtual/thermal/thermal_zone2/type": "cv0-thermal\n",
        "sys/devices/virtual/thermal/thermal_zone2/temp": "-256000\n",
        "sys/devices/virtual/thermal/thermal_zone10/type": "tj-thermal\n",
        "sys/devices/virtual/thermal/thermal_zone10/temp": "48843\n",
        "sys/class/devfreq/17000000.gpu/cur_freq": "305000000\n",
        "sys/class/devfreq/17000000.gpu/device/load": "372\n",
        "sys/class/devfreq/15380000.nvjpg/cur_freq": "115200000\n",
        "sys/class/hwmon/hwmon0/name": "cpu_thermal\n",
        "sys/class/hwmon/hwmon1/name": "ina3221\n",
        "sys/class/hwmon/hwmon1/in1_label": "VDD_IN\n",
        "sys/class/hwmon/hwmon1/in1_input": "5072\n",
        "sys/class/hwmon/hwmon1/curr1_input": "1120\n",
        "sys/class/hwmon/hwmon1/in2_label": "VDD_CPU_GPU_CV\n",
        "sys/class/hwmon/hwmon1/in2_input": "5064\n",
        "sys/class/hwmon/hwmon1/curr2_input": "160\n",
        "sys/class/hwmon/hwmon1/in7_label": "sum of shunt voltages\n",
        "sys/class/hwmon/hwmon1/in7_input": "0\n",
    ]

    @Test func readsAnOrinTree() throws {
        let root = try Self.tree(Self.orinFiles)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let telemetry = SystemTelemetry(root: root)
        let first = telemetry.read()
        #expect(first.cpus.map(\.index) == [0, 1, 2])
        #expect(first.cpus.map(\.online) == [true, true, false])
        #expect(first.cpus.map(\.frequencyMHz) == [729.6, 1510.4, nil])
        #expect(first.cpus.allSatisfy { $0.loadPercent == nil })  // no previous reading yet

        // Busy time between two readings: cpu0 +100 busy of +200, cpu1 +30 of +300.
        var files = Self.orinFiles
        files["proc/stat"] = """
            cpu  0 0 0 0
            cpu0 150 0 100 450 0 0 0 0 0 0
            cpu1 310 0 170 1320 0 0 0 0 0 0
            """
        try files["proc/stat"]!.write(toFile: root + "/proc/stat", atomically: true, encoding: .utf8)
        let s = telemetry.read()
        #expect(s.cpus.map(\.loadPercent) == [50, 10, nil])

        #expect(s.memory?.totalBytes == 7_800_000 * 1024)
        #expect(s.memory?.availableBytes == 5_000_000 * 1024)
        #expect(s.memory?.usedBytes == 2_800_000 * 1024)
        #expect(s.memory?.swapTotalBytes == 3_900_000 * 1024)
        #expect(s.memory?.swapUsedBytes == 100_000 * 1024)
        #expect(s.memory?.swapCachedBytes == 1024 * 1024)
        #expect(telemetry.availableMemoryBytes() == 5_000_000 * 1024)

        #expect(s.temperatures.map(\.name) == ["cpu-thermal", "gpu-thermal", "cv0-thermal", "tj-thermal"])
        #expect(s.temperatures.map(\.celsius) == [46.531, 48.218, nil, 48.843])

        #expect(s.gpu?.loadPercent == 37.2)
        #expect(s.gpu?.frequenciesMHz == [305])

        #expect(s.rails.map(\.name) == ["VDD_IN", "VDD_CPU_GPU_CV"])
        let expected: [Double] = [5680.64, 810.24]
        #expect(s.rails.map(\.milliwatts) == expected)
        #expect(s.rails.first?.voltageMillivolts == 5072)
        #expect(s.rails.first?.currentMilliamperes == 1120)
        #expect(s.totalMilliwatts == 5680.64)
        #expect(s.unavailable.isEmpty)
    }

    @Test func xavierAndNanoGPUPaths() throws {
        let xavier = try Self.tree([
            "sys/class/devfreq/17000000.gv11b/cur_freq": "510000000\n",
            "sys/devices/gpu.0/load": "999\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: xavier) }
        let gpu = SystemTelemetry(root: xavier).read().gpu
        #expect(gpu?.loadPercent == 99.9)
        #expect(gpu?.frequenciesMHz == [510])
    }

    @Test func aMachineWithoutJetsonPartsSaysWhatIsMissing() throws {
        let root = try Self.tree(["proc/meminfo": "MemTotal: 1000 kB\nMemAvailable: 400 kB\n"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let s = SystemTelemetry(root: root).read()
        #expect(s.memory?.usedBytes == 600 * 1024)
        #expect(s.gpu == nil && s.rails.isEmpty && s.temperatures.isEmpty)
        #expect(s.unavailable.contains { $0.hasPrefix("gpu:") })
        #expect(s.unavailable.contains { $0.hasPrefix("power:") })
        #expect(s.unavailable.contains { $0.hasPrefix("temperature:") })
        #expect(s.unavailable.contains { $0.hasPrefix("cpu:") })
    }

    /// This (non-Jetson) machine: real CPU and memory values, the Jetson parts "not available".
    @Test func readsThisMachine() throws {
        let telemetry = SystemTelemetry()
        _ = telemetry.read()
        Thread.sleep(forTimeInterval: 0.2)
        let s = telemetry.read()
        let online = s.cpus.filter(\.online)
        #expect(online.count == ProcessInfo.processInfo.activeProcessorCount)
        for core in online {
            let load = try #require(core.loadPercent)
            #expect(load >= 0 && load <= 100)
        }
        let memory = try #require(s.memory)
        #expect(memory.totalBytes > 100 << 20)
        #expect(memory.usedBytes > 0 && memory.usedBytes < memory.totalBytes)
        #expect(s.gpu != nil || s.unavailable.contains { $0.hasPrefix("gpu:") })
    }
}
