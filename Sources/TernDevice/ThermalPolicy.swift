import Foundation

/// The thermal, power and performance controller, written as a pure function from readings to
/// actions so it can be tested on recorded traces.
///
/// Throttling is a ladder of steps. Step 0 is normal service in `normalMode`. Each step up first
/// moves to the next lower power mode of `powerModes` (ordered from fastest to most frugal), then
/// scales every dynamic batcher's `max_batch_size` by the next factor of `batchScales`, and the
/// last step pauses the `shedModels` (their requests get 503). Steps below 0 are the power modes
/// faster than `normalMode`, taken only when a model misses its target with thermal headroom; a
/// boost lasts until the board gets hot or the models go idle.
///
/// Hysteresis: one step up at the first reading at or above `throttleAboveCelsius` (or above the
/// power budget) and at every later hot reading; one step down only after `recoveryReadings`
/// consecutive readings at or below `recoverBelowCelsius`. Readings between the two thresholds
/// hold the current step, so a temperature hovering around one threshold never flaps.
public struct ThermalPolicy: Sendable, Equatable {
    /// The policy's knobs (`--device-policy FILE` reads them as JSON with these names).
    public struct Settings: Sendable, Equatable, Codable {
        /// The temperature at or above which the policy steps up, in °C.
        public var throttleAboveCelsius: Double = 85
        /// The temperature at or below which readings count towards a step down, in °C.
        public var recoverBelowCelsius: Double = 75
        /// Whole-board power at or above which the policy throttles as if hot (mW), if set.
        public var powerBudgetMilliwatts: Double?
        /// Readings at or below `recoverBelowCelsius` needed before each step down.
        public var recoveryReadings: Int = 3
        /// Sensors to watch (names as reported, case-insensitive); empty: every sensor except
        /// `ignoredSensors`.
        public var sensors: [String] = []
        /// PMIC reads a fixed 100 °C on several boards.
        public var ignoredSensors: [String] = ["PMIC"]
        /// Power modes from fastest to most frugal (names from nvpmodel.conf); may be empty.
        public var powerModes: [String] = []
        /// The mode of step 0; defaults to the first of `powerModes`.
        public var normalMode: String?
        /// Factors applied to `max_batch_size` on the steps after the last power mode.
        public var batchScales: [Double] = [0.5, 0.25]
        /// Models paused (503) on the last step: the low-priority ones.
        public var shedModels: [String] = []
        /// Latency targets per model (mean ms over a reading interval); a miss with headroom
        /// raises the power mode.
        public var latencyTargetsMs: [String: Double] = [:]
        /// How far below `throttleAboveCelsius` the board must be to raise the power mode.
        public var boostHeadroomCelsius: Double = 10

        /// Makes the default settings: throttle at 85 °C, recover at 75 °C, no power modes and batch scales of 0.5 then
        /// 0.25.
        public init() {}

        /// Decodes settings from JSON, taking the default for every field the JSON leaves out.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Settings()
            throttleAboveCelsius = try c.decodeIfPresent(Double.self, forKey: .throttleAboveCelsius) ?? d.throttleAboveCelsius
            recoverBelowCelsius = try c.decodeIfPresent(Double.self, forKey: .recoverBelowCelsius) ?? d.recoverBelowCelsius
            powerBudgetMilliwatts = try c.decodeIfPresent(Double.self, forKey: .powerBudgetMilliwatts)
            recoveryReadings = try c.decodeIfPresent(Int.self, forKey: .recoveryReadings) ?? d.recoveryReadings
            sensors = try c.decodeIfPresent([String].self, forKey: .sensors) ?? d.sensors
            ignoredSensors = try c.decodeIfPresent([String].self, forKey: .ignoredSensors) ?? d.ignoredSensors
            powerModes = try c.decodeIfPresent([String].self, forKey: .powerModes) ?? d.powerModes
            normalMode = try c.decodeIfPresent(String.self, forKey: .normalMode)
            batchScales = try c.decodeIfPresent([Double].self, forKey: .batchScales) ?? d.batchScales
            shedModels = try c.decodeIfPresent([String].self, forKey: .shedModels) ?? d.shedModels
            latencyTargetsMs = try c.decodeIfPresent([String: Double].self, forKey: .latencyTargetsMs) ?? d.latencyTargetsMs
            boostHeadroomCelsius = try c.decodeIfPresent(Double.self, forKey: .boostHeadroomCelsius) ?? d.boostHeadroomCelsius
        }

        /// Checks the thresholds and lists make sense together.
        public func validate() throws(DeviceError) {
            guard recoverBelowCelsius < throttleAboveCelsius else {
                throw DeviceError("device policy: recoverBelowCelsius (\(recoverBelowCelsius)) must be below throttleAboveCelsius (\(throttleAboveCelsius))")
            }
            guard recoveryReadings >= 1 else { throw DeviceError("device policy: recoveryReadings must be at least 1") }
            guard batchScales.allSatisfy({ $0 > 0 && $0 <= 1 }) else {
                throw DeviceError("device policy: batchScales must lie in (0, 1]")
            }
            if let normalMode, !powerModes.contains(normalMode) {
                throw DeviceError("device policy: normalMode '\(normalMode)' is not one of powerModes \(powerModes)")
            }
        }

        var normalIndex: Int { normalMode.flatMap { powerModes.firstIndex(of: $0) } ?? 0 }
        /// Steps that lower the power mode.
        var modeSteps: Int { max(powerModes.count - 1 - normalIndex, 0) }
        var maxStep: Int { modeSteps + batchScales.count + (shedModels.isEmpty ? 0 : 1) }
        var minStep: Int { -normalIndex }
    }

    /// What the board looks like at one reading.
    public struct Input: Sendable, Equatable {
        /// The hottest watched sensor, in °C (nil when none reported).
        public var celsius: Double?
        /// The whole board's power draw, in milliwatts, if known.
        public var milliwatts: Double?
        /// Models that missed their latency target since the previous reading.
        public var modelsMissingTarget: [String]
        /// No request arrived since the previous reading.
        public var idle: Bool

        /// Makes a reading from the watched temperature and optionally the power, the models missing their target and
        /// whether traffic was idle.
        public init(celsius: Double?, milliwatts: Double? = nil, modelsMissingTarget: [String] = [], idle: Bool = false) {
            self.celsius = celsius
            self.milliwatts = milliwatts
            self.modelsMissingTarget = modelsMissingTarget
            self.idle = idle
        }
    }

    /// What the serving side should do.
    public enum Action: Sendable, Equatable {
        case setPowerMode(String)
        /// Scale every dynamic batcher's `max_batch_size` (1 = as configured).
        case setBatchScale(Double)
        case pauseModels([String])
        case resumeModels([String])
    }

    /// A step change with its actions and a sentence for the log.
    public struct Decision: Sendable, Equatable {
        /// The step before the change.
        public var fromStep: Int
        /// The step after the change.
        public var toStep: Int
        /// What the serving side should do to reach the new step, in order.
        public var actions: [Action]
        /// Why the step changed, beginning with "throttle:", "recover:", "boost:" or "idle:".
        public var reason: String
    }

    /// The knobs the policy was made with.
    public let settings: Settings
    /// The current step: 0 is normal service, positive steps throttle, negative steps boost.
    public private(set) var step = 0
    private var coolReadings = 0
    private var idleReadings = 0

    /// Makes a policy at step 0 with the given settings.
    public init(settings: Settings) {
        self.settings = settings
    }

    /// The hottest watched sensor of a reading.
    public func watchedCelsius(_ stats: DeviceStats) -> Double? {
        let watched = stats.temperatures.filter { sensor in
            let name = sensor.name.lowercased()
            if !settings.sensors.isEmpty { return settings.sensors.contains { $0.lowercased() == name } }
            return !settings.ignoredSensors.contains { $0.lowercased() == name }
        }
        return watched.compactMap(\.celsius).max()
    }

    /// Feeds one reading; returns the decision when the step changes.
    public mutating func observe(_ input: Input) -> Decision? {
        let hotByTemperature = input.celsius.map { $0 >= settings.throttleAboveCelsius } ?? false
        var hotByPower = false
        if let milliwatts = input.milliwatts, let budget = settings.powerBudgetMilliwatts { hotByPower = milliwatts >= budget }
        if hotByTemperature || hotByPower {
            coolReadings = 0
            // A boosted board that heats up goes straight back to normal first.
            let target = step < 0 ? 0 : min(step + 1, settings.maxStep)
            guard target != step else { return nil }
            let why = hotByTemperature
                ? String(format: "%.1f °C ≥ %.1f °C", input.celsius!, settings.throttleAboveCelsius)
                : String(format: "%.0f mW ≥ budget %.0f mW", input.milliwatts!, settings.powerBudgetMilliwatts!)
            return move(to: target, reason: "throttle: " + why)
        }
        guard let celsius = input.celsius else { return nil }
        if celsius <= settings.recoverBelowCelsius {
            coolReadings += 1
            if step > 0 {
                guard coolReadings >= settings.recoveryReadings else { return nil }
                coolReadings = 0
                return move(to: step - 1, reason: String(format: "recover: %d readings ≤ %.1f °C", settings.recoveryReadings, settings.recoverBelowCelsius))
            }
        } else {
            coolReadings = 0  // inside the hysteresis band: hold
        }
        let missing = input.modelsMissingTarget
        if step <= 0, !missing.isEmpty, step > settings.minStep,
            celsius <= settings.throttleAboveCelsius - settings.boostHeadroomCelsius
        {
            idleReadings = 0
            return move(to: step - 1, reason: "boost: \(missing.joined(separator: ", ")) missed the latency target at " + String(format: "%.1f °C", celsius))
        }
        // A boost lasts until the board gets hot (above) or the models go idle.
        idleReadings = input.idle ? idleReadings + 1 : 0
        if step < 0, idleReadings >= settings.recoveryReadings {
            idleReadings = 0
            return move(to: 0, reason: "idle: back to the normal mode")
        }
        return nil
    }

    private mutating func move(to target: Int, reason: String) -> Decision {
        let before = Self.plan(step, settings)
        let after = Self.plan(target, settings)
        var actions: [Action] = []
        if let mode = after.mode, mode != before.mode { actions.append(.setPowerMode(mode)) }
        if after.batchScale != before.batchScale { actions.append(.setBatchScale(after.batchScale)) }
        if after.shed != before.shed {
            actions.append(after.shed ? .pauseModels(settings.shedModels) : .resumeModels(settings.shedModels))
        }
        let decision = Decision(fromStep: step, toStep: target, actions: actions, reason: reason)
        step = target
        return decision
    }

    /// The serving configuration of one step.
    struct Plan: Equatable {
        var mode: String?
        var batchScale: Double
        var shed: Bool
    }

    static func plan(_ step: Int, _ settings: Settings) -> Plan {
        let modeIndex = min(max(settings.normalIndex + min(step, settings.modeSteps), 0), max(settings.powerModes.count - 1, 0))
        let mode = settings.powerModes.isEmpty ? nil : settings.powerModes[modeIndex]
        let beyond = step - settings.modeSteps
        let scale = beyond >= 1 && !settings.batchScales.isEmpty ? settings.batchScales[min(beyond, settings.batchScales.count) - 1] : 1
        let shed = !settings.shedModels.isEmpty && beyond > settings.batchScales.count
        return Plan(mode: mode, batchScale: scale, shed: shed)
    }
}
