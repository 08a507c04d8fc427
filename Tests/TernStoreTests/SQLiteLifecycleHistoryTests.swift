import Foundation
import Logging
import Testing
import TernRuntime
@testable import TernStore

@Suite struct SQLiteLifecycleHistoryTests {
    static func path() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tern-history-\(UUID().uuidString)/history.sqlite").path
    }

    @Test func eventsRoundTripAndSurviveReopening() throws {
        let path = Self.path()
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
        let gate = GateResult(name: "accuracy", passed: false, measured: 0.41, threshold: 0.9, detail: "accuracy 0.41")
        do {
            let history = try SQLiteLifecycleHistory(path: path, logger: Logger(label: "test"))
            history.record(LifecycleEvent(model: "digits", action: "load", toVersions: [1], durationMs: 12.5))
            history.record(LifecycleEvent(model: "other", action: "load", toVersions: [4]))
            history.record(LifecycleEvent(model: "digits", action: "swap_rejected", fromVersions: [1], toVersions: [2], gates: [gate], detail: "no"))
            // Who asked: set by a frontend around a control request, read when the event is made.
            LifecycleEvent.$requestedBy.withValue("127.0.0.1:5000, key admin-key") {
                history.record(LifecycleEvent(model: "who", action: "unload"))
            }
        }
        let reopened = try SQLiteLifecycleHistory(path: path, logger: Logger(label: "test"))
        let digits = reopened.events(model: "digits", limit: 10)
        #expect(digits.map(\.action) == ["load", "swap_rejected"])
        #expect(digits[0].toVersions == [1] && digits[0].durationMs == 12.5)
        #expect(digits[1].gates == [gate] && digits[1].fromVersions == [1] && digits[1].detail == "no")
        #expect(reopened.events(model: nil, limit: 3).map(\.model) == ["other", "digits", "who"])  // the newest three, oldest first
        #expect(reopened.events(model: "who", limit: 1).first?.by == "127.0.0.1:5000, key admin-key")
        #expect(digits.allSatisfy { $0.by.isEmpty }, "the server's own changes name no one")
        // WAL mode, as DESIGN.md asks for the embedded store.
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))
    }

    @Test func decisionsSurviveReopeningAndCanBeForgotten() throws {
        let path = Self.path()
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
        let pinned = ModelDecisions(pinnedVersions: [1], rollbackVersions: [3], servedVersions: [1])
        let rejected = ModelDecisions(servedVersions: [4], rejectedVersions: [5], rejectedFingerprint: "9f")
        do {
            let history = try SQLiteLifecycleHistory(path: path, logger: Logger(label: "test"))
            history.save(ModelDecisions(servedVersions: [2]), model: "digits")
            history.save(pinned, model: "digits")  // replaced whole
            history.save(rejected, model: "other")
            history.save(ModelDecisions(), model: "gone")
            history.save(nil, model: "gone")
        }
        let saved = try SQLiteLifecycleHistory(path: path, logger: Logger(label: "test")).savedDecisions()
        #expect(saved == ["digits": pinned, "other": rejected])
    }

    @Test func retentionKeepsTheNewestEvents() throws {
        let path = Self.path()
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
        let history = try SQLiteLifecycleHistory(path: path, retainedEvents: 3, logger: Logger(label: "test"))
        for i in 1...7 { history.record(LifecycleEvent(model: "m", action: "load", toVersions: [Int64(i)])) }
        #expect(history.events(model: "m", limit: 100).map(\.toVersions) == [[5], [6], [7]])
    }
}
