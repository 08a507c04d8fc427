import Foundation
import Testing
import TernCore
import TernTraining
@testable import TernFederated

/// The aggregation rules on small inputs worked out by hand (the parity test against flwr itself
/// is tests/integration/test_fl_strategies.py).
@Suite struct StrategyTests {
    static func result(_ id: String, _ values: [Double], examples: Int) -> FitResult {
        FitResult(clientID: id, weights: [FLArray(shape: [values.count], values: values)], numExamples: examples)
    }

    static let current: FLWeights = [FLArray(shape: [2], values: [0, 0])]

    @Test func fedAvgWeighsByExamples() throws {
        var strategy = try FLStrategy(.fedavg)
        let out = try strategy.aggregate(round: 1, current: Self.current, results: [
            Self.result("a", [1, 2], examples: 1), Self.result("b", [4, 8], examples: 3),
        ])
        #expect(out[0].values == [3.25, 6.5])
    }

    @Test func medianTrimmedMeanAndKrumResistAnOutlier() throws {
        let results = [
            Self.result("a", [1, 1], examples: 10), Self.result("b", [2, 2], examples: 10),
            Self.result("c", [3, 3], examples: 10), Self.result("d", [4, 4], examples: 10),
            Self.result("evil", [1000, -1000], examples: 10),
        ]
        var median = try FLStrategy(.fedmedian)
        #expect(try median.aggregate(round: 1, current: Self.current, results: results)[0].values == [3, 2])
        var options = StrategyOptions()
        options.trimBeta = 0.2
        var trimmed = try FLStrategy(.fedtrimmedavg, options: options)
        #expect(try trimmed.aggregate(round: 1, current: Self.current, results: results)[0].values == [3, 2])
        options.numMaliciousClients = 1
        var krum = try FLStrategy(.krum, options: options)
        let chosen = try krum.aggregate(round: 1, current: Self.current, results: results)[0].values
        #expect(chosen == [2, 2] || chosen == [3, 3])
        options.numClientsToKeep = 3
        var multi = try FLStrategy(.multikrum, options: options)
        #expect(try multi.aggregate(round: 1, current: Self.current, results: results)[0].values == [2, 2])
        var average = try FLStrategy(.fedavg)
        #expect(try average.aggregate(round: 1, current: Self.current, results: results)[0].values[0] > 100)
    }

    @Test func serverOptimisersMoveFromTheCurrentWeights() throws {
        let results = [Self.result("a", [1, -1], examples: 1)]
        var adam = try FLStrategy(.fedadam)
        // m = 0.1 d, v = 0.01 d^2, eta_norm = 0.1 sqrt(1 - 0.99^2) / (1 - 0.9^2): the step is eta_norm * sign(d).
        let etaNorm = 0.1 * (1 - 0.99 * 0.99).squareRoot() / (1 - 0.81)
        let step = try adam.aggregate(round: 1, current: Self.current, results: results)[0].values
        #expect(abs(step[0] - etaNorm) < 1e-9 && abs(step[1] + etaNorm) < 1e-9)
        var adagrad = try FLStrategy(.fedadagrad)
        let ada = try adagrad.aggregate(round: 1, current: Self.current, results: results)[0].values
        #expect(abs(ada[0] - 0.1) < 1e-9)
        var options = StrategyOptions()
        options.serverMomentum = 0.9
        var momentum = try FLStrategy(.fedavgm, options: options)
        let first = try momentum.aggregate(round: 1, current: Self.current, results: results)
        #expect(first[0].values == [1, -1])
        let second = try momentum.aggregate(round: 2, current: first, results: [Self.result("a", [2, -2], examples: 1)])
        // pseudo-gradient -1, momentum 0.9 * -1 + -1 = -1.9: 1 + 1.9
        #expect(abs(second[0].values[0] - 2.9) < 1e-12)
        #expect(try FLStrategy(.fedprox).fitConfig == ["proximal_mu": .double(0.1)])
        #expect(throws: TernError.self) { try FLStrategy(.multikrum) }
        var wrong = try FLStrategy(.fedavg)
        #expect(throws: TernError.self) {
            try wrong.aggregate(round: 1, current: Self.current, results: [Self.result("a", [1, 2, 3], examples: 1)])
        }
    }
}
