import Foundation
import TernCore
import TernTraining

/// Which devices may train in a round, from what they report through `get_properties`: a device
/// that is hot, throttled, low on battery or over its energy budget is skipped; among the rest,
/// those with more headroom are likelier to be picked. A client that reports nothing (a plain
/// Python `NumPyClient`) is neither skipped nor favoured.
public struct EdgeSelectionPolicy: Sendable, Equatable, Codable {
    /// Skip a device at or above this temperature (°C); nil: never.
    public var maxTemperatureC: Double? = 85
    /// Skip a device below this battery level (percent) unless it is charging; nil: never.
    public var minBatteryPercent: Double? = 20
    /// Skip a device that spent more than this many joules in its last round; nil: no budget.
    public var energyBudgetJ: Double?
    /// Skip a device that reports `throttled: true`.
    public var skipThrottled = true
    /// Seconds to wait before asking again when too few devices qualify.
    public var retrySeconds = 10.0

    /// The default limits.
    public init() {}
}

/// What a device says about itself (Tern's property names; a Tern edge client fills them from
/// `TernDevice`, a Python client may send any of them).
public struct DeviceCondition: Sendable, Equatable {
    /// `battery_percent`: 0–100.
    public var batteryPercent: Double?
    /// `charging`.
    public var charging: Bool?
    /// `temperature_c`: the hottest sensor.
    public var temperatureC: Double?
    /// `throttled`: the device is being slowed by its thermal or power management.
    public var throttled: Bool?
    /// `power_mode`, e.g. a Jetson's `15W`.
    public var powerMode: String?
    /// `energy_j`: joules spent in the last round.
    public var energyJ: Double?

    /// Reads the known keys of a `get_properties` answer; others are ignored.
    public init(properties: [String: FLScalar]) {
        func finite(_ key: String) -> Double? { properties[key]?.number.flatMap { $0.isFinite ? $0 : nil } }
        batteryPercent = finite("battery_percent")
        if case .bool(let value)? = properties["charging"] { charging = value } else { charging = properties["charging"]?.number.map { $0 != 0 } }
        temperatureC = finite("temperature_c")
        if case .bool(let value)? = properties["throttled"] { throttled = value } else { throttled = properties["throttled"]?.number.map { $0 != 0 } }
        if case .string(let mode)? = properties["power_mode"] { powerMode = mode }
        energyJ = finite("energy_j")
    }

    /// Whether the device said anything this policy can use.
    public var isEmpty: Bool { batteryPercent == nil && temperatureC == nil && throttled == nil && energyJ == nil && charging == nil }
}

/// The selection as pure functions.
public enum EdgeSelection {
    /// Why a device sits a round out.
    public enum Skip: String, Error, Sendable, Codable, CaseIterable {
        /// At or above the temperature limit.
        case hot
        /// Throttled by its own thermal or power management.
        case throttled
        /// Below the battery floor and not charging.
        case lowBattery = "low_battery"
        /// Spent more than the energy budget last round.
        case overEnergyBudget = "over_energy_budget"
    }

    /// The verdict on one device: skipped (and why), or eligible with a headroom in (0, 1].
    public static func assess(_ condition: DeviceCondition, policy: EdgeSelectionPolicy) -> Result<Double, Skip> {
        if let limit = policy.maxTemperatureC, let temperature = condition.temperatureC, temperature >= limit { return .failure(.hot) }
        if policy.skipThrottled, condition.throttled == true { return .failure(.throttled) }
        if let floor = policy.minBatteryPercent, let battery = condition.batteryPercent, battery < floor, condition.charging != true {
            return .failure(.lowBattery)
        }
        if let budget = policy.energyBudgetJ, let spent = condition.energyJ, spent > budget { return .failure(.overEnergyBudget) }
        // Headroom: the mean of what is known, each in [0, 1]; an unknown term counts 0.5.
        var terms: [Double] = []
        if let battery = condition.batteryPercent { terms.append(condition.charging == true ? 1 : min(max(battery / 100, 0), 1)) } else { terms.append(0.5) }
        if let limit = policy.maxTemperatureC, let temperature = condition.temperatureC {
            terms.append(min(max((limit - temperature) / max(limit - 25, 1), 0), 1))
        } else {
            terms.append(0.5)
        }
        if let budget = policy.energyBudgetJ, let spent = condition.energyJ, budget > 0 {
            terms.append(min(max(1 - spent / budget, 0), 1))
        } else {
            terms.append(0.5)
        }
        return .success(max(terms.reduce(0, +) / Double(terms.count), 0.05))
    }

    /// `count` distinct candidates drawn without replacement with probability growing with their
    /// headroom (Efraimidis and Spirakis's keys u^(1/w)), in the order drawn.
    public static func choose<G: RandomNumberGenerator>(_ count: Int, from candidates: [(client: String, headroom: Double)], using generator: inout G) -> [String] {
        let keyed = candidates.map { candidate -> (String, Double) in
            let u = Double.random(in: Double.ulpOfOne..<1, using: &generator)
            return (candidate.client, Foundation.log(u) / max(candidate.headroom, 1e-6))
        }
        return keyed.sorted { $0.1 > $1.1 }.prefix(count).map(\.0)
    }
}
