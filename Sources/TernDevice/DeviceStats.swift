/// One reading of a device's state: CPU cores, memory, GPU, engines, temperatures and power rails.
/// Both telemetry sources produce it: a `tegrastats` line (`TegrastatsParser`) and the live sysfs
/// and procfs files (`SystemTelemetry`). A field a source cannot read stays nil or empty, and
/// `unavailable` says why, so a non-Jetson machine reports "not available" instead of failing.
public struct DeviceStats: Sendable, Equatable, Codable {
    /// One CPU core. An offline core has no load or frequency.
    public struct CPUCore: Sendable, Equatable, Codable {
        public var index: Int
        public var online: Bool
        /// Busy time since the previous reading, 0–100.
        public var loadPercent: Double?
        public var frequencyMHz: Double?

        public init(index: Int, online: Bool, loadPercent: Double? = nil, frequencyMHz: Double? = nil) {
            self.index = index
            self.online = online
            self.loadPercent = loadPercent
            self.frequencyMHz = frequencyMHz
        }
    }

    /// RAM and swap in bytes. tegrastats also reports the largest free block (`lfb`).
    public struct Memory: Sendable, Equatable, Codable {
        public var totalBytes: UInt64
        public var usedBytes: UInt64
        public var availableBytes: UInt64?
        public var swapTotalBytes: UInt64?
        public var swapUsedBytes: UInt64?
        public var swapCachedBytes: UInt64?
        /// `lfb NxZ`: N free blocks of Z bytes.
        public var largestFreeBlocks: Int?
        public var largestFreeBlockBytes: UInt64?

        public init(totalBytes: UInt64, usedBytes: UInt64, availableBytes: UInt64? = nil) {
            self.totalBytes = totalBytes
            self.usedBytes = usedBytes
            self.availableBytes = availableBytes
        }
    }

    /// A clocked engine: the GPU (`GR3D_FREQ`), the memory controller (`EMC_FREQ`), encoders,
    /// decoders, ... `active` is false for an engine tegrastats prints as `off`.
    public struct Engine: Sendable, Equatable, Codable {
        public var name: String
        public var active: Bool
        public var loadPercent: Double?
        /// One frequency per clock domain (the Orin GPU prints one per GPC).
        public var frequenciesMHz: [Double]

        public init(name: String, active: Bool = true, loadPercent: Double? = nil, frequenciesMHz: [Double] = []) {
            self.name = name
            self.active = active
            self.loadPercent = loadPercent
            self.frequenciesMHz = frequenciesMHz
        }
    }

    /// A temperature sensor. `celsius` is nil when the sensor is offline (tegrastats `-256C`).
    public struct Temperature: Sendable, Equatable, Codable {
        public var name: String
        public var celsius: Double?
        /// Further values some formats print after the current one (JetPack 7: `name@cur/maxC`).
        public var extraCelsius: [Double]

        public init(name: String, celsius: Double?, extraCelsius: [Double] = []) {
            self.name = name
            self.celsius = celsius
            self.extraCelsius = extraCelsius
        }
    }

    /// A power rail in milliwatts. tegrastats prints `current/average` (JetPack 7 adds a third
    /// value, kept in `peakMilliwatts`); a rail named `NC` is not connected.
    public struct PowerRail: Sendable, Equatable, Codable {
        public var name: String
        public var milliwatts: Double
        public var averageMilliwatts: Double?
        public var peakMilliwatts: Double?
        public var voltageMillivolts: Double?
        public var currentMilliamperes: Double?
        public var connected: Bool { name != "NC" }

        public init(name: String, milliwatts: Double, averageMilliwatts: Double? = nil, peakMilliwatts: Double? = nil) {
            self.name = name
            self.milliwatts = milliwatts
            self.averageMilliwatts = averageMilliwatts
            self.peakMilliwatts = peakMilliwatts
        }
    }

    /// The time printed at the start of the line (`tegrastats --logfile` adds it), as written.
    public var timestamp: String?
    public var cpus: [CPUCore] = []
    public var memory: Memory?
    /// Internal RAM of older boards (`IRAM used/totalkB (lfb NkB)`), in bytes.
    public var iramUsedBytes: UInt64?
    public var iramTotalBytes: UInt64?
    public var gpu: Engine?
    public var emc: Engine?
    /// Every other engine, in the order printed.
    public var engines: [Engine] = []
    public var temperatures: [Temperature] = []
    public var rails: [PowerRail] = []
    /// Sources this reading could not use and why (e.g. "gpu: no GPU load file").
    public var unavailable: [String] = []

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
