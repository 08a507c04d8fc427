import Foundation
import Logging
import ServiceLifecycle
import TernCore
import TernRuntime

/// Runs the frontends as one service so that a graceful shutdown (SIGTERM, SIGINT) drains them
/// together: every listener closes at once (each frontend closes its own on the signal), every
/// connection finishes the requests it has read and closes, then the engine's queued and running
/// requests finish, all within the exit timeout (`--exit-timeout-secs`, as Triton's). Placed last
/// in the ServiceGroup, it is shut down first: the services it leaves running (experiment
/// recording, device monitor) still see the drained requests.
///
/// It first runs `startup` (the start-up model loads) while the other services already run; the
/// listeners are bound and answer meanwhile (health says not ready, models not loaded yet are
/// unavailable). A shutdown that comes during the start-up does not wait for it: the frontends
/// close and drain at once, and the loads are left to the process's exit.
struct DrainedFrontends: Service {
    let frontends: [any DrainableFrontend & Service]
    let engine: InferenceServer
    let exitTimeout: Duration
    let startup: @Sendable () async -> Void
    let logger: Logger

    func run() async throws {
        // Whichever ends first: the start-up loads, or the wait for a graceful shutdown (both
        // tasks inherit the service's shutdown context).
        let (ended, report) = AsyncStream.makeStream(of: Void.self)
        let startup = self.startup
        let loading = Task {
            await startup()
            report.yield()
        }
        let watching = Task {
            if (try? await gracefulShutdown()) != nil { report.yield() }
        }
        var first = ended.makeAsyncIterator()
        _ = await first.next()
        watching.cancel()
        _ = loading  // still running when a shutdown came first
        try await withThrowingTaskGroup(of: Void.self) { group in
            for frontend in frontends {
                group.addTask { try await frontend.run() }
            }
            group.addTask {
                // Throws only when the group is cancelled: then there is nothing left to drain.
                guard (try? await gracefulShutdown()) != nil else { return }
                await drain()
            }
            try await group.waitForAll()
        }
    }

    private func drain() async {
        let started = ContinuousClock.now
        logger.notice("shutting down: new connections are refused; finishing the requests already accepted",
                      metadata: ["requests_in_flight": .stringConvertible(engine.requestsInFlight), "exit_timeout_s": .string("\(exitTimeout.seconds)")])
        let forced = await withTaskGroup(of: (String, Int).self) { group in
            for frontend in frontends {
                group.addTask { (frontend.role, await frontend.drainConnections(timeout: exitTimeout)) }
            }
            var forced: [String: Int] = [:]
            for await (role, count) in group { forced[role] = count }
            return forced
        }
        let left = await engine.drain(timeout: max(exitTimeout - (ContinuousClock.now - started), .milliseconds(100)))
        var metadata: Logger.Metadata = ["drain_ms": .string(String(format: "%.1f", (ContinuousClock.now - started).milliseconds))]
        for (role, count) in forced.sorted(by: { $0.key < $1.key }) where count > 0 { metadata["\(role)_connections_closed_unfinished"] = .stringConvertible(count) }
        if left > 0 { metadata["requests_unfinished"] = .stringConvertible(left) }
        if left > 0 || forced.values.contains(where: { $0 > 0 }) {
            logger.warning("drain timed out: some requests may not have been answered", metadata: metadata)
        } else {
            logger.notice("drained: every accepted request was answered", metadata: metadata)
        }
    }
}
