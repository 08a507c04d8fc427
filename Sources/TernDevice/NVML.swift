import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// NVIDIA's management library (`libnvidia-ml.so.1`) loaded at run time, with Tern's own
/// declarations of the few entry points it reads, so the binary needs no CUDA to build and runs
/// where there is none (then `NVML.open` says why). Discrete GPUs only: on Jetson the readings
/// come from tegrastats/sysfs.
public final class NVML: @unchecked Sendable {
    // @unchecked: the function pointers are set once in init; NVML itself is thread-safe.
    private typealias Init = @convention(c) () -> Int32
    private typealias Count = @convention(c) (UnsafeMutablePointer<UInt32>) -> Int32
    private typealias HandleByIndex = @convention(c) (UInt32, UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias Text = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>, UInt32) -> Int32
    private typealias Utilization = @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias Memory = @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt64>) -> Int32
    private typealias UInt32Reading = @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias UInt64Reading = @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt64>) -> Int32

    /// The library file that was opened.
    public let path: String
    private let handle: UnsafeMutableRawPointer
    private let shutdown: Init
    private let count: Count
    private let deviceByIndex: HandleByIndex
    private let uuid: Text
    private let utilization: Utilization
    private let memory: Memory
    private let powerUsage: UInt32Reading
    private let powerLimit: UInt32Reading
    private let energy: UInt64Reading

    /// What one GPU reports now; a reading the driver does not support is nil.
    public struct Reading: Sendable, Equatable {
        /// The GPU's UUID, e.g. `GPU-5d8f...` (Triton's `gpu_uuid` label).
        public var uuid: String
        /// Fraction of the last sample period a kernel ran, 0...1.
        public var utilization: Double?
        /// Memory on the board, in bytes.
        public var memoryTotalBytes: UInt64?
        /// Memory in use, in bytes.
        public var memoryUsedBytes: UInt64?
        /// Power drawn now, in watts.
        public var powerWatts: Double?
        /// The power management limit, in watts.
        public var powerLimitWatts: Double?
        /// Energy used since the driver loaded, in joules.
        public var energyJoules: Double?
    }

    /// Opens `path` (default `libnvidia-ml.so.1` from the loader's search path) and initialises
    /// NVML; throws a message saying why when there is no usable NVML.
    public init(path: String = "libnvidia-ml.so.1") throws(DeviceError) {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw DeviceError("NVML is not available (\(path): \(String(cString: dlerror())))")
        }
        func symbol<T>(_ name: String, _: T.Type) throws(DeviceError) -> T {
            guard let pointer = dlsym(handle, name) else { throw DeviceError("\(path) has no \(name): not NVML") }
            return unsafeBitCast(pointer, to: T.self)
        }
        do throws(DeviceError) {
            let initialise = try symbol("nvmlInit_v2", Init.self)
            shutdown = try symbol("nvmlShutdown", Init.self)
            count = try symbol("nvmlDeviceGetCount_v2", Count.self)
            deviceByIndex = try symbol("nvmlDeviceGetHandleByIndex_v2", HandleByIndex.self)
            uuid = try symbol("nvmlDeviceGetUUID", Text.self)
            utilization = try symbol("nvmlDeviceGetUtilizationRates", Utilization.self)
            memory = try symbol("nvmlDeviceGetMemoryInfo", Memory.self)
            powerUsage = try symbol("nvmlDeviceGetPowerUsage", UInt32Reading.self)
            powerLimit = try symbol("nvmlDeviceGetPowerManagementLimit", UInt32Reading.self)
            energy = try symbol("nvmlDeviceGetTotalEnergyConsumption", UInt64Reading.self)
            let status = initialise()
            guard status == 0 else { throw DeviceError("nvmlInit_v2 failed with NVML status \(status) (\(path))") }
        } catch {
            dlclose(handle)
            throw error
        }
        self.handle = handle
        self.path = path
    }

    deinit {
        _ = shutdown()
        dlclose(handle)
    }

    /// Free memory on GPU `index` now, in bytes; nil when NVML has no such GPU or cannot say.
    /// NVML numbers GPUs in PCI bus order, as CUDA does with `CUDA_DEVICE_ORDER=PCI_BUS_ID` (set
    /// it when a box mixes GPU models, or the `gpus` of an instance group may name another board).
    public func freeMemoryBytes(ofGPU index: Int) -> UInt64? {
        guard index >= 0, index <= Int(UInt32.max) else { return nil }
        var device: OpaquePointer?
        guard deviceByIndex(UInt32(index), &device) == 0 else { return nil }
        var bytes = [UInt64](repeating: 0, count: 3)
        return memory(device, &bytes) == 0 ? bytes[1] : nil
    }

    /// A reading of every GPU NVML sees, in index order.
    public func read() -> [Reading] {
        var devices: UInt32 = 0
        guard count(&devices) == 0 else { return [] }
        var readings: [Reading] = []
        for index in 0..<devices {
            var device: OpaquePointer?
            guard deviceByIndex(index, &device) == 0 else { continue }
            var text = [CChar](repeating: 0, count: 96)
            guard uuid(device, &text, UInt32(text.count)) == 0 else { continue }
            var reading = Reading(uuid: String(cString: text))
            // nvmlUtilization_t { unsigned int gpu; unsigned int memory; } in percent.
            var rates = [UInt32](repeating: 0, count: 2)
            if utilization(device, &rates) == 0 { reading.utilization = Double(rates[0]) / 100 }
            // nvmlMemory_t { unsigned long long total; free; used; } in bytes.
            var bytes = [UInt64](repeating: 0, count: 3)
            if memory(device, &bytes) == 0 {
                reading.memoryTotalBytes = bytes[0]
                reading.memoryUsedBytes = bytes[2]
            }
            var milliwatts: UInt32 = 0
            if powerUsage(device, &milliwatts) == 0 { reading.powerWatts = Double(milliwatts) / 1000 }
            if powerLimit(device, &milliwatts) == 0 { reading.powerLimitWatts = Double(milliwatts) / 1000 }
            var millijoules: UInt64 = 0
            if energy(device, &millijoules) == 0 { reading.energyJoules = Double(millijoules) / 1000 }
            readings.append(reading)
        }
        return readings
    }
}
