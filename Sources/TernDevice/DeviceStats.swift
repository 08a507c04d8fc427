/// One reading of a device's state: CPU cores, memory, GPU, engines, temperatures and power rails.
/// Both telemetry sources produce it: a `tegrastats` line (`TegrastatsParser`) and the live sysfs
/// and procfs files (`SystemTelemetry`). A field a source cannot read stays nil or empty, and
/// `unavailable` says why, so a non-Jetson machine reports "not available" instead of failing.
public struct DeviceStats: Sendable, Equatable, Codable {
    /// One CPU core. An offline core has no load or frequency.
    public struct CPUCore: Sendable, Equatable, Codable {
        /// The core's number, from 0.
        public var index: Int
        /// Whether the core is online (tegrastats prints an offline one as `off`).
        public var online: Bool
        /// Busy time since the previous reading, 0–100.
        public var loadPercent: Double?
        /// The core's current clock frequency in MHz.
        public var frequencyMHz: Double?

        /// Makes a core reading from its index, online state, and optional load and frequency.
        public init(index: Int, online: Bool, loadPercent: Double? = nil, frequencyMHz: Double? = nil) {
            self.index = index
            self.online = online
            self.loadPercent = loadPercent
            self.frequencyMHz = frequencyMHz
        }
    }

    /// RAM and swap in bytes. tegrastats also reports the largest free block (`lfb`).
    public struct Memory: Sendable, Equatable, Codable {
        /// Total RAM in bytes.
        public var totalBytes: UInt64
        /// RAM in use in bytes (total minus available when read from `/proc/meminfo`).
        public var usedBytes: UInt64
        /// RAM that can still be allocated in bytes (`MemAvailable`), nil when the source does not report it.
        public var availableBytes: UInt64?
        /// Total swap in bytes.
        public var swapTotalBytes: UInt64?
        /// Swap in use in bytes.
        public var swapUsedBytes: UInt64?
        /// Swap also held in RAM (`SwapCached`, tegrastats `cached`) in bytes.
        public var swapCachedBytes: UInt64?
        /// `lfb NxZ`: N free blocks of Z bytes.
        public var largestFreeBlocks: Int?
        /// The size of each of the largest free blocks (`lfb NxZ`: Z), in bytes.
        public var largestFreeBlockBytes: UInt64?

        /// Makes a memory reading from total and used RAM and optionally the available RAM, all in bytes.
        public init(totalBytes: UInt64, usedBytes: UInt64, availableBytes: UInt64? = nil) {
            self.totalBytes = totalBytes
            self.usedBytes = usedBytes
            self.availableBytes = availableBytes
        }
    }

    /// A clocked engine: the GPU (`GR3D_FREQ`), the memory controller (`EMC_FREQ`), encoders,
    /// decoders, ... `active` is false for an engine tegrastats prints as `off`.
    public struct Engine: Sendable, Equatable, Codable {
        /// The engine's name as printed, e.g. "GR3D_FREQ", "EMC_FREQ" or "NVENC".
        public var name: String
        /// Whether the engine is running (false when tegrastats prints it as `off`).
        public var active: Bool
        /// The engine's utilisation, 0–100.
        public var loadPercent: Double?
        /// One frequency per clock domain (the Orin GPU prints one per GPC).
        public var frequenciesMHz: [Double]

        /// Makes an engine reading from its name, activity, optional load and clock frequencies in MHz.
        public init(name: String, active: Bool = true, loadPercent: Double? = nil, frequenciesMHz: [Double] = []) {
            self.name = name
            self.active = active
            self.loadPercent = loadPercent
            self.frequenciesMHz = frequenciesMHz
        }
    }

    /// A temperature sensor. `celsius` is nil when the sensor is offline (tegrastats `-256C`).
    public struct Temperature: Sendable, Equatable, Codable {
        /// The sensor's name as the source reports it: a tegrastats label or a thermal zone's `type`.
        public var name: String
        /// The current temperature in °C, nil when the sensor is offline.
        public var celsius: Double?
        /// Further values some formats print after the current one (JetPack 7: `name@cur/maxC`).
        public var extraCelsius: [Double]

        /// Makes a sensor reading from its name, current temperature and any further values, all in °C.
        public init(name: String, celsius: Double?, extraCelsius: [Double] = []) {
            self.name = name
            self.celsius = celsius
            self.extraCelsius = extraCelsius
        }
    }

    /// A power rail in milliwatts. tegrastats prints `current/average` (JetPack 7 adds a third
    /// value, kept in `peakMilliwatts`); a rail named `NC` is not connected.
    public struct PowerRail: Sendable, Equatable, Codable {
        /// The rail's name as reported, e.g. "VDD_IN"; "NC" for an unconnected rail.
        public var name: String
        /// The rail's current power draw in milliwatts.
        public var milliwatts: Double
        /// The average power tegrastats prints after the current one, in milliwatts.
        public var averageMilliwatts: Double?
        /// The peak power JetPack 7's tegrastats prints as a third value, in milliwatts.
        public var peakMilliwatts: Double?
        /// The rail's voltage in millivolts, as hwmon reports it.
        public var voltageMillivolts: Double?
        /// The rail's current in milliamperes, as hwmon reports it.
        public var currentMilliamperes: Double?
        /// Whether the rail is connected (its name is not "NC").
        public var connected: Bool { name != "NC" }

        /// Makes a rail reading from its name and current power, with optional average and peak power, all in
        /// milliwatts.
        public init(name: String, milliwatts: Double, averageMilliwatts: Double? = nil, peakMilliwatts: Double? = nil) {
            self.name = name
            self.milliwatts = milliwatts
            self.averageMilliwatts = averageMilliwatts
            self.peakMilliwatts = peakMilliwatts
        }
    }

    /// The time printed at the start of the line (`tegrastats --logfile` adds it), as written.
    public var timestamp: String?
    /// The CPU cores in index order, offline ones included.
    public var cpus: [CPUCore] = []
    /// RAM and swap, nil when the source reports no memory.
    public var memory: Memory?
    /// Internal RAM of older boards (`IRAM used/totalkB (lfb NkB)`), in bytes.
    public var iramUsedBytes: UInt64?
    /// Total internal RAM of older boards, in bytes.
    public var iramTotalBytes: UInt64?
    /// The GPU (tegrastats `GR3D_FREQ`, or "GPU" read from sysfs), nil when the source has none.
    public var gpu: Engine?
    /// The external memory controller (`EMC_FREQ`), nil when not reported.
    public var emc: Engine?
    /// Every other engine, in the order printed.
    public var engines: [Engine] = []
    /// The temperature sensors in the order reported.
    public var temperatures: [Temperature] = []
    /// The power rails in the order reported, unconnected ones included.
    public var rails: [PowerRail] = []
    /// Sources this reading could not use and why (e.g. "gpu: no GPU load file").
    public var unavailable: [String] = []

    /// Makes an empty reading that the telemetry sources fill in.
    public init() {}

    /// Whole-board power in milliwatts: the input rail where the board measures one (`VDD_IN`,
    /// `POM_5V_IN`, `VIN...`), otherwise the sum of the connected rails. nil without rails.
    public var totalMilliwatts: Double? {
        let connected = rails.filter(\.connected)
        guard !connected.isEmpty else { return nil }
        if let input = connected.first(where: { $0.name == "VDD_IN" || $0.name == "POM_5V_IN" || $0.name == "VIN" }) {
            return input.milliwatts
        }
        return connected.reduce(0) { $0 + $1.milliwatts }
    }

    /// The hottest online sensor, the input of the thermal policy.
    public var hottestCelsius: Double? {
        temperatures.compactMap(\.celsius).max()
    }

    /// Mean load of the online cores.
    public var cpuLoadPercent: Double? {
        let loads = cpus.filter(\.online).compactMap(\.loadPercent)
        return loads.isEmpty ? nil : loads.reduce(0, +) / Double(loads.count)
    }
}
