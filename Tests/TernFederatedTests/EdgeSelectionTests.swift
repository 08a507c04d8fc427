import Foundation
import TernTraining
import Testing
@testable import TernFederated

/// Edge-aware selection as a pure function, then inside the engine.
@Suite struct EdgeSelectionTests {
    static var policy: EdgeSelectionPolicy {
        var policy = EdgeSelectionPolicy()
        policy.energyBudgetJ = 100
        return policy
    }

    @Test func hotThrottledLowAndOverBudgetDevicesAreSkipped() {
        let cases: [([String: FLScalar], EdgeSelection.Skip?)] = [
            (["temperature_c": .double(91)], .hot),
            (["temperature_c": .int(85)], .hot),
            (["throttled": .bool(true)], .throttled),
            (["battery_percent": .double(10)], .lowBattery),
            (["battery_percent": .double(10), "charging": .bool(true)], nil),
            (["energy_j": .double(150)], .overEnergyBudget),
            ([:], nil),
            (["power_mode": .string("7W"), "unrelated": .int(3)], nil),
        ]
        for (properties, expected) in cases {
            switch EdgeSelection.assess(DeviceCondition(properties: properties), policy: Self.policy) {
            case .success: #expect(expected == nil, "\(properties) should be skipped")
            case .failure(let reason): #expect(reason == expected, "\(properties)")
            }
        }
    }

    @Test func headroomRanksDevicesAndNeutralSitsInTheMiddle() throws {
        func headroom(_ properties: [String: FLScalar]) throws -> Double {
            try EdgeSelection.assess(DeviceCondition(properties: properties), policy: Self.policy).get()
        }
        let cool = try headroom(["battery_percent": .double(95), "temperature_c": .double(35), "energy_j": .double(10)])
        let warm = try headroom(["battery_percent": .double(40), "temperature_c": .double(75), "energy_j": .double(80)])
        let neutral = try headroom([:])
        #expect(cool > neutral && neutral > warm)
        #expect(abs(neutral - 0.5) < 1e-12)
        // Drawn often, the device with most headroom is picked far more often than the one with least.
        var generator = SplitMix64(seed: 9)
        var picks: [String: Int] = [:]
        for _ in 0..<2000 {
            let chosen = EdgeSelection.choose(1, from: [("cool", cool), ("neutral", neutral), ("warm", warm)], using: &generator)
            picks[chosen[0], default: 0] += 1
        }
        #expect(picks["cool", default: 0] > picks["neutral", default: 0] && picks["neutral", default: 0] > picks["warm", default: 0])
        #expect(picks["warm", default: 0] > 0)  // less likely, not excluded
        let all = EdgeSelection.choose(5, from: [("a", 0.2), ("b", 0.9)], using: &generator)
        #expect(Set(all) == ["a", "b"])
    }

    @Test func theEngineAsksForPropertiesAndWaitsWhenTooFewQualify() throws {
        var settings = FLSettings()
        settings.rounds = 1
        settings.minFitClients = 2
        settings.minAvailableClients = 3
        settings.fractionEvaluate = 0
        settings.selection = Self.policy
        var engine = try RoundEngine(settings: settings, initialWeights: RoundEngineTests.start)
        _ = engine.clientJoined("hot")
        _ = engine.clientJoined("python")
        let probe = engine.clientJoined("jetson")
        let asked = probe.compactMap { if case .getProperties(let c) = $0 { return c } else { return nil } }
        #expect(Set(asked) == ["hot", "python", "jetson"])
        _ = engine.propertiesReturned(from: "hot", ["temperature_c": .double(96)])
        _ = engine.propertiesReturned(from: "python", [:])
        let busy = engine.propertiesReturned(from: "jetson", ["throttled": .bool(true)])
        guard case .retryLater(1, _)? = busy.first else { Issue.record("expected a retry, got \(busy)"); return }
        #expect(engine.retryDue(round: 2).isEmpty)
        let again = engine.retryDue(round: 1)
        #expect(again.contains { if case .getProperties = $0 { return true } else { return false } })
        _ = engine.propertiesReturned(from: "hot", ["temperature_c": .double(96)])
        _ = engine.propertiesReturned(from: "python", [:])
        let fit = engine.propertiesReturned(from: "jetson", ["throttled": .bool(false), "battery_percent": .int(80)])
        #expect(Set(RoundEngineTests.fits(fit)) == ["python", "jetson"])
        for client in ["python", "jetson"] { _ = engine.fitReturned(from: client, round: 1, RoundEngineTests.fit(client, 1)) }
        #expect(engine.history.first?.skipped == ["hot": .hot])
    }
}
