import Foundation
import Logging
import Synchronization
import Testing
import TernMetrics
@testable import TernDevice

/// The monitor end to end without a server: a recorded trace in, metrics and power-mode commands out.
@Suite struct DeviceMonitorTests {
    @Test func exportsReadingsAndDrivesPowerModesThroughTheRunner() throws {
        let lines = [
            TegrastatsParserTests.orinNano,
            TegrastatsParserTests.orinNano.replacingOccurrences(of: "tj@48.843C", with: "tj@91.5C"),
            TegrastatsParserTests.orinNano.replacingOccurrences(of: "tj@48.843C", with: "tj@92C"),
        ]
        let position = Mutex(0)
        let tools = FakeJetsonTools(names: [0: "15W", 1: "7W", 2: "MAXN_SUPER"])
        tools.mode.withLock { $0 = (2, "MAXN_SUPER") }
        let (manager, folder) = try PowerModeTests.manager(tools)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var settings = ThermalPolicy.Settings()
        settings.powerModes = ["MAXN_SUPER", "15W", "7W"]
        settings.batchScales = []
        let exporter = PrometheusExporter()
        let monitor = DeviceMonitor(
            read: {
                let index = position.withLock { p in defer { p += 1 }; return min(p, lines.count - 1) }
                return try! TegrastatsParser.parse(lines[index])
            },
            policy: settings, powerModes: manager, metricsFactory: exporter.factory, logger: Logger(label: "test"))

        #expect(monitor.sample() == nil)
        let text = exporter.render()
        #expect(text.contains(#"tern_device_temperature_celsius{sensor="tj"} 48.843"#))
        #expect(text.contains(#"tern_device_power_milliwatts{rail="VDD_IN"} 5704"#))
        #expect(text.contains("tern_device_power_total_milliwatts 5704"))
        #expect(text.contains(#"tern_device_cpu_utilization{core="0"} 0.19"#))
        #expect(text.contains(#"nv_gpu_utilization{gpu_uuid="tegra-igpu"} 0"#))
        #expect(text.contains(#"tern_device_engine_active{engine="NVDEC"} 0"#))

        let first = try #require(monitor.sample())
        #expect(first.actions == [.setPowerMode("15W")])
        let second = try #require(monitor.sample())
        #expect(second.actions == [.setPowerMode("7W")])
        #expect(monitor.sample() == nil)  // at the last step
        let changes = tools.calls.withLock { $0 }.filter { $0.first == "nvpmodel" && $0.count == 3 }
        #expect(changes == [["nvpmodel", "-m", "0"], ["nvpmodel", "-m", "1"]])
        let snapshot = monitor.snapshot
        #expect(snapshot.policy?.step == 2)
        #expect(snapshot.policy?.powerMode == "7W")
        #expect(snapshot.policy?.watchedCelsius == 92)
        #expect(snapshot.policy?.decisions.map(\.failures) == [[], []])
        #expect(exporter.render().contains("tern_device_policy_step 2"))
        #expect(monitor.snapshotJSON().contains(#""step" : 2"#))
    }

    @Test func aFailedPowerModeChangeIsRecordedNotFatal() throws {
        let tools = FakeJetsonTools(names: [0: "15W", 1: "7W"], installed: [])
        let (manager, folder) = try PowerModeTests.manager(tools)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var settings = ThermalPolicy.Settings()
        settings.powerModes = ["15W", "7W"]
        let hot = try TegrastatsParser.parse("RAM 1/2MB tj@99C")
        let monitor = DeviceMonitor(read: { hot }, policy: settings, powerModes: manager, metricsFactory: PrometheusExporter().factory, logger: Logger(label: "test"))
        let decision = try #require(monitor.sample())
        #expect(decision.actions == [.setPowerMode("7W")])
        let failures = monitor.snapshot.policy?.decisions.first?.failures ?? []
        #expect(failures.count == 1 && failures[0].contains("nvpmodel is not installed"))
    }
}
