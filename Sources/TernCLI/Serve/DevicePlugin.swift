import ArgumentParser
import Foundation
import Logging
import TernCore
import TernDevice
import TernRuntime

/// `tern serve`'s options for device telemetry and the thermal/power policy.
struct DeviceServeOptions: ServePlugin {
    @Option(name: .customLong("device-interval"), help: "Seconds between device telemetry readings (metrics, /device/stats, policy); 0 turns them off.")
    var deviceInterval: Double = 2

    @Option(name: .customLong("device-policy"), help: "JSON file with the thermal/power policy's settings (see docs/reference.md, 'The thermal policy'); none: telemetry only.")
    var devicePolicy: String?

    @Option(name: .customLong("nvpmodel-conf"), help: "The board's nvpmodel configuration, for the policy's power modes.")
    var nvpmodelConfiguration: String = "/etc/nvpmodel.conf"

    @Option(name: .customLong("device-state-dir"), help: "Where the clocks and power mode before the policy's first change are kept.")
    var deviceStateDirectory: String = "/var/lib/tern"

    @Option(name: .customLong("device-root"), help: ArgumentHelp("Filesystem root of sysfs/procfs (for recorded trees).", visibility: .hidden))
    var deviceRoot: String = "/"

    @Option(name: .customLong("nvml-library"), help: "NVIDIA's management library, for Triton's nv_gpu_* metrics of discrete GPUs (default: libnvidia-ml.so.1 if the system has it; 'none' turns them off).")
    var nvmlLibrary: String?

    func validate() throws {
        guard deviceInterval >= 0, devicePolicy == nil || deviceInterval > 0 else {
            throw ValidationError("--device-interval must be positive (a --device-policy needs readings)")
        }
    }

    /// The device's telemetry (the engine's memory admission reads free RAM from it too).
    func telemetry() -> SystemTelemetry { SystemTelemetry(root: deviceRoot) }

    /// The policy file's settings, checked; nil without `--device-policy`.
    func policySettings() throws -> ThermalPolicy.Settings? {
        guard let devicePolicy else { return nil }
        guard let data = FileManager.default.contents(atPath: devicePolicy) else {
            throw ValidationError("--device-policy \(devicePolicy): cannot read the file")
        }
        do {
            let settings = try JSONDecoder().decode(ThermalPolicy.Settings.self, from: data)
            try settings.validate()
            return settings
        } catch let error as DeviceError {
            throw ValidationError("--device-policy \(devicePolicy): \(error.description)")
        } catch {
            throw ValidationError("--device-policy \(devicePolicy): not valid policy JSON: \(error)")
        }
    }

    func prepare(_ context: ServeContext) throws -> PreparedPattern {
        let policy = try policySettings()
        guard deviceInterval > 0 else { return PreparedPattern { _ in nil } }
        let telemetry = telemetry()
        let interval = Duration.milliseconds(Int64(deviceInterval * 1000))
        let (configuration, stateDirectory) = (nvpmodelConfiguration, deviceStateDirectory)
        let gpu = context.nvml.map { GPUMetrics(nvml: $0, interval: interval, factory: context.metricsFactory, logger: context.logger) }
        return PreparedPattern { engine in
            let monitor = DeviceMonitor(
                interval: interval, read: { telemetry.read() }, engine: engine, policy: policy,
                powerModes: policy?.powerModes.isEmpty == false
                    ? PowerModeManager(configurationPath: configuration, stateDirectory: stateDirectory) : nil,
                metricsFactory: context.metricsFactory, logger: context.logger)
            return DevicePattern(monitor: monitor, gpu: gpu)
        }
    }

    /// NVIDIA's management library, unless there is none (said in the log: an error when the
    /// library was named, a note otherwise, as most edge boxes have none).
    func openNVML(logger: Logger) -> NVML? {
        guard nvmlLibrary != "none" else { return nil }
        do {
            return try NVML(path: nvmlLibrary ?? "libnvidia-ml.so.1")
        } catch {
            if nvmlLibrary != nil {
                logger.error("no GPU metrics or GPU memory admission: \(error.description)")
            } else {
                logger.info("no GPU metrics (nv_gpu_*) or GPU memory admission: \(error.description)")
            }
            return nil
        }
    }
}
