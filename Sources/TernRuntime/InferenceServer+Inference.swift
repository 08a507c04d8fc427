import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import TernCore

/// Running requests, the statistics of the runners that serve them, and finding those runners.
extension InferenceServer {
    // MARK: Inference

    /// Runs one request on the requested (or highest ready) version of a model.
    public func infer(_ request: InferenceRequest) async throws(TernError) -> InferenceResponse {
        if let virtual = virtualModel(request.modelName) {
            let result: Result<InferenceResponse, TernError> = await withCheckedContinuation { continuation in
                virtual.handle(request, engine: self) { continuation.resume(returning: $0) }
            }
            return try result.get()
        }
        let runner = try servingRunner(request)
        return try await runner.infer(request)
    }

    /// Runs the request and calls `completion` once with its outcome, on the thread that finishes
    /// it (possibly this one, before `submit` returns, unless `allowInline` is false: a fast model
    /// with a free instance runs on the caller's thread). For callers that are not async, such as
    /// event-loop frontends: no task is created on the way, and `Answer.run` tells an inline
    /// answer from a later one. This is the one request path; `infer` awaits it.
    public func submit(
        _ request: InferenceRequest, allowInline: Bool = true,
        completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) {
        if let virtual = virtualModel(request.modelName) {
            return virtual.handle(request, engine: self, completion: completion)
        }
        submit(toModel: request, allowInline: allowInline, completion: completion)
    }

    /// As `submit`, on a model of the repository (no virtual model answers): how a virtual model
    /// forwards a request it has routed, without looking its target up among the virtual ones.
    public func submit(
        toModel request: InferenceRequest, allowInline: Bool = true,
        completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void
    ) {
        do throws(TernError) {
            try servingRunner(request).submit(request, allowInline: allowInline, completion: completion)
        } catch {
            completion(.failure(error))
        }
    }

    /// The runner for a request, unless a device policy has paused the model.
    private func servingRunner(_ request: InferenceRequest) throws(TernError) -> ModelVersionRunner {
        if anyPaused.load(ordering: .relaxed), let reason = shaping.withLock({ $0.paused[request.modelName] }) {
            throw .unavailable("model '\(request.modelName)' is paused: \(reason)")
        }
        return try runner(request.modelName, version: request.modelVersion)
    }

    // MARK: Statistics

    /// Statistics of every ready version (name nil), of one model, or of one version.
    public func statistics(model name: String? = nil, version: Int64? = nil) throws(TernError) -> [ModelStatistics] {
        if let name {
            if let version { return [try runner(name, version: version).statistics.snapshot] }
            let runners = registry.withLock { $0.lifecycles[name]?.served?.runners }
            guard let runners, !runners.isEmpty else { throw Self.unknownModel(name) }
            return runners.keys.sorted().map { runners[$0]!.statistics.snapshot }
        }
        let all = registry.withLock { models in models.lifecycles.values.compactMap(\.served) }
        return all.sorted { $0.name < $1.name }.flatMap { model in
            model.runners.keys.sorted().map { model.runners[$0]!.statistics.snapshot }
        }
    }

    /// How busy the serving (or given) version of a model is; nil when it does not queue through
    /// a dynamic batcher (sequence batching, ensembles, routing models).
    public func occupancy(model name: String, version: Int64? = nil) throws(TernError) -> ModelOccupancy? {
        try runner(name, version: version).occupancy
    }

    // MARK: Runner lookup

    func runner(_ name: String, version: Int64?) throws(TernError) -> ModelVersionRunner {
        // Only the runner leaves the lock: no copy of the model's tables per request.
        let found: ModelVersionRunner?? = registry.withLock { models in
            guard let loaded = models.lifecycles[name]?.served, let newest = loaded.runners.keys.max() else { return nil }
            return .some(loaded.runners[version ?? newest])
        }
        guard let found else { throw Self.unknownModel(name) }
        guard let runner = found else {
            throw .notFound("Request for unknown model: '\(name)' version \(version ?? 0) is not at ready state")
        }
        return runner
    }

    func readyVersions(_ name: String) -> [Int64] {
        registry.withLock { $0.lifecycles[name]?.served?.versions ?? [] }
    }

    static func unknownModel(_ name: String) -> TernError {
        .notFound("Request for unknown model: '\(name)' is not found")
    }
}
