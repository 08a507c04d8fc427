import Synchronization

/// What the engine shares with the models it loads: a way back to the engine for models that
/// call other models (ensembles, request handlers) without keeping it alive, and the count of
/// requests in progress, which a drained shutdown waits to fall to zero.
final class EngineLink: Sendable {
    private struct Box { weak var server: InferenceServer? }
    private let box = Mutex(Box())
    private let running = Atomic(0)

    var server: InferenceServer? {
        get { box.withLock { $0.server } }
        set { box.withLock { $0.server = newValue } }
    }

    /// A request entered a model version (queued or running).
    func requestBegan() { running.wrappingAdd(1, ordering: .relaxed) }

    /// A request left it: answered or failed.
    func requestEnded() { running.wrappingSubtract(1, ordering: .releasing) }

    /// Requests in progress in every model version of the engine.
    var requestsInFlight: Int { running.load(ordering: .acquiring) }
}
