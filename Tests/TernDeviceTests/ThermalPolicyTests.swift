import Testing
@testable import TernDevice

/// The controller on recorded-style traces: heating, cooling, hovering at a threshold, boosting.
@Suite struct ThermalPolicyTests {
    static var settings: ThermalPolicy.Settings {
        var s = ThermalPolicy.Settings()
        s.throttleAboveCelsius = 85
        s.recoverBelowCelsius = 75
        s.recoveryReadings = 3
        s.powerModes = ["MAXN", "25W", "15W", "7W"]
        s.normalMode = "25W"
        s.batchScales = [0.5]
        s.shedModels = ["batch_reports"]
        s.latencyTargetsMs = ["detector": 30]
        return s
    }

    /// Runs a temperature trace; returns the step after each reading and the decisions.
    static func run(_ trace: [Double], missing: [[String]] = [], idle: [Bool] = [], policy: inout ThermalPolicy) -> ([Int], [ThermalPolicy.Decision]) {
        var steps: [Int] = []
        var decisions: [ThermalPolicy.Decision] = []
        for (i, celsius) in trace.enumerated() {
            let input = ThermalPolicy.Input(
                celsius: celsius, modelsMissingTarget: i < missing.count ? missing[i] : [], idle: i < idle.count ? idle[i] : false)
            if let decision = policy.observe(input) { decisions.append(decision) }
            steps.append(policy.step)
        }
        return (steps, decisions)
    }

    @Test func heatingThrottlesAtTheFirstHotReadingAndEscalatesEachHotReading() {
        var policy = ThermalPolicy(settings: Self.settings)
        let (steps, decisions) = Self.run([70, 80, 84.9, 85, 86, 87, 88, 89, 90], policy: &policy)
        #expect(steps == [0, 0, 0, 1, 2, 3, 4, 4, 4])
        #expect(decisions.map(\.actions) == [
            [.setPowerMode("15W")],
            [.setPowerMode("7W")],
            [.setBatchScale(0.5)],
            [.pauseModels(["batch_reports"])],
        ])
        #expect(decisions[0].reason.hasPrefix("throttle: 85.0 °C"))
    }

    @Test func coolingStepsDownOnlyAfterConsecutiveCoolReadings() {
        var policy = ThermalPolicy(settings: Self.settings)
        _ = Self.run([90, 90, 90, 90], policy: &policy)
        #expect(policy.step == 4)
        let (steps, decisions) = Self.run([74, 74, 76, 74, 74, 74, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70], policy: &policy)
        // 76 °C (inside the band) resets the count of cool readings.
        #expect(steps == [4, 4, 4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0, 0])
        #expect(decisions.map(\.actions) == [
            [.resumeModels(["batch_reports"])],
            [.setBatchScale(1)],
            [.setPowerMode("15W")],
            [.setPowerMode("25W")],
        ])
    }

    @Test func hoveringAroundTheThresholdDoesNotFlap() {
        var policy = ThermalPolicy(settings: Self.settings)
        // Oscillates 84–86 °C: escalates on hot readings, never steps back inside the band.
        let trace = (0..<40).map { $0 % 2 == 0 ? 84.0 : 86.0 }
        let (steps, _) = Self.run(trace, policy: &policy)
        #expect(zip(steps, steps.dropFirst()).allSatisfy { $0 <= $1 })
        // Hovering around the lower threshold (74–76) after throttling: no step down.
        var cooled = ThermalPolicy(settings: Self.settings)
        _ = Self.run([90], policy: &cooled)
        let (hover, decisions) = Self.run((0..<40).map { $0 % 2 == 0 ? 74.0 : 76.0 }, policy: &cooled)
        #expect(Set(hover) == [1])
        #expect(decisions.isEmpty)
    }

    @Test func boostsWithHeadroomWhenAModelMissesItsTargetAndDropsTheBoostWhenHot() {
        var policy = ThermalPolicy(settings: Self.settings)
        // 70 °C is 15 °C below the throttle point (headroom 10): boost to MAXN.
        let (steps, decisions) = Self.run([70, 70, 78, 86], missing: [["detector"], ["detector"], ["detector"], []], policy: &policy)
        #expect(steps == [-1, -1, -1, 0])  // at the fastest mode already; 78 °C has no headroom; 86 °C: back to normal
        #expect(decisions.map(\.actions) == [[.setPowerMode("MAXN")], [.setPowerMode("25W")]])
        #expect(decisions[0].reason.contains("detector"))

        var idle = ThermalPolicy(settings: Self.settings)
        let (idleSteps, _) = Self.run([70, 70, 70, 70, 70], missing: [["detector"]], idle: [false, true, true, true, false], policy: &idle)
        #expect(idleSteps == [-1, -1, -1, 0, 0])
    }

    @Test func powerBudgetThrottlesLikeHeat() {
        var settings = Self.settings
        settings.powerBudgetMilliwatts = 10_000
        var policy = ThermalPolicy(settings: settings)
        #expect(policy.observe(.init(celsius: 60, milliwatts: 9_000)) == nil)
        let decision = policy.observe(.init(celsius: 60, milliwatts: 12_000))
        #expect(decision?.actions == [.setPowerMode("15W")])
        #expect(decision?.reason.contains("budget") == true)
    }

    @Test func withoutPowerModesThrottlingScalesBatchesThenSheds() {
        var settings = ThermalPolicy.Settings()
        settings.batchScales = [0.5, 0.25]
        settings.shedModels = ["low"]
        var policy = ThermalPolicy(settings: settings)
        let (steps, decisions) = Self.run([90, 90, 90, 90], policy: &policy)
        #expect(steps == [1, 2, 3, 3])
        #expect(decisions.map(\.actions) == [[.setBatchScale(0.5)], [.setBatchScale(0.25)], [.pauseModels(["low"])]])
        // No temperature reading: nothing to decide.
        #expect(policy.observe(.init(celsius: nil)) == nil)
    }

    @Test func settingsAreValidated() throws {
        var bad = ThermalPolicy.Settings()
        bad.recoverBelowCelsius = 90
        #expect(throws: DeviceError.self) { try bad.validate() }
        var mode = ThermalPolicy.Settings()
        mode.powerModes = ["A"]
        mode.normalMode = "B"
        #expect(throws: DeviceError.self) { try mode.validate() }
        try Self.settings.validate()
    }
}
