import Foundation
import GRDB
import Testing
import TernCore
import TernTraining
@testable import TernFederated

/// The coordinator's SQLite store: rounds and checkpoints round-trip, old checkpoints go.
@Suite struct FLStoreTests {
    @Test func checkpointsResumeWithStrategyStateAndPrivacy() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fl-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("fl.sqlite").path
        let store = try FLStore(path: path)
        try store.begin(run: "r", settings: "--rounds 5", rounds: 5, restarting: false)
        var accountant = RDPAccountant()
        var history: [FLRoundRecord] = []
        for round in 1...3 {
            accountant.compose(samplingRate: 0.5, noiseMultiplier: 1)
            var record = FLRoundRecord(round: round)
            record.fitClients = ["a", "b", "c"]
            record.fitResults = 2
            record.fitFailures = ["c": .timeout]
            record.skipped = ["d": .hot]
            record.aggregated = true
            record.loss = 1.0 / Double(round)
            history.append(record)
            let weights: FLWeights = [FLArray(shape: [2], values: [Double(round), -1]), FLArray(dataType: .fp64, shape: [1], values: [0.5])]
            let state = FLStrategyState(firstMoment: [[0.1, 0.2], [0.3]], secondMoment: [[Double(round), 1], [2]])
            try store.save(
                run: "r", summary: FLRoundSummary(record: record, seconds: 0.5, bytesSent: 100, bytesReceived: 50),
                checkpoint: FLCheckpoint(round: round, weights: weights, strategyState: state, accountant: accountant, history: history))
        }
        let reopened = try FLStore(path: path)
        let checkpoint = try #require(try reopened.latestCheckpoint(run: "r"))
        #expect(checkpoint.round == 3 && checkpoint.weights[0].values == [3, -1] && checkpoint.weights[1].dataType == .fp64)
        #expect(checkpoint.strategyState.secondMoment == [[3, 1], [2]] && checkpoint.strategyState.momentum.isEmpty)
        #expect(checkpoint.accountant == accountant && checkpoint.history.count == 3)
        #expect(checkpoint.history[2].skipped == ["d": .hot])
        let summaries = try reopened.summaries(run: "r")
        #expect(summaries.map(\.record.round) == [1, 2, 3] && summaries[0].bytesSent == 100)
        try reopened.begin(run: "r", settings: "--rounds 5", rounds: 5, restarting: true)
        #expect(try reopened.run("r")?.restarts == 1)
        #expect(try reopened.latestCheckpoint(run: "other") == nil)
        let kept = try reopened.read { db in try Int.fetchAll(db, sql: "SELECT DISTINCT round FROM fl_checkpoints ORDER BY round") }
        #expect(kept == [2, 3])
        var settings = FLSettings()
        settings.rounds = 5
        settings.minFitClients = 1
        settings.minAvailableClients = 1
        let engine = try RoundEngine(settings: settings, resuming: checkpoint)
        #expect(engine.currentRound == 4 && engine.history.count == 3 && engine.weights == checkpoint.weights)
        let text = FLReport.text(info: try reopened.run("r"), rounds: summaries)
        #expect(text.contains("3 of 5 rounds, 1 restart") && text.contains("(1 timeout)") && text.contains("[#############-------]"))
    }
}
