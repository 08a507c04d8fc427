import Foundation
import Synchronization
import Testing
import TernCore
import TernTesting
@testable import TernRuntime

/// The decisions that outlive a restart are written in the order they were made, whatever the
/// threads performing the lifecycle's actions do: after a burst of concurrent promotes and
/// rollbacks the history holds exactly the decisions the model lives by.
@Suite struct PersistedDecisionsTests {
    @Test func concurrentPromotesAndRollbacksLeaveTheLastDecisionsSaved() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        defer { try? FileManager.default.removeItem(at: repo) }
        try FileManager.default.copyItem(at: repo.appendingPathComponent("add_sub/1"), to: repo.appendingPathComponent("add_sub/2"))
        let history = InMemoryLifecycleHistory()
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: repo, controlMode: .explicit, startupModels: ["add_sub"], cpuCores: 2),
            backends: [try TestEnvironment.backend.get()], history: history, logger: TestEnvironment.logger)
        await server.start()
        #expect(server.isModelReady("add_sub"))
        await withTaskGroup(of: Void.self) { group in
            for round in 0..<24 {
                group.addTask {
                    switch round % 3 {
                    case 0: _ = try? await server.promote(model: "add_sub", version: 1)
                    case 1: _ = try? await server.rollback(model: "add_sub")
                    default: _ = try? await server.promote(model: "add_sub", version: 2)
                    }
                }
            }
        }
        let lived = server.registry.withLock { $0.lifecycles["add_sub"]?.decisions }
        #expect(lived?.pinnedVersions != nil)
        #expect(history.savedDecisions()["add_sub"] == lived)
        // What is served is what the saved pin says.
        #expect(try server.lifecycleStatus(model: "add_sub").servingVersions == lived?.pinnedVersions)
    }
}
