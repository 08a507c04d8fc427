import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import TernCore

/// The repository side: its index, explicit load and unload, poll-mode rescans, and the memory a
/// load reserves.
extension InferenceServer {
    // MARK: Repository

    /// Every model of the repository with the state of each version; `readyOnly` keeps the ready ones.
    public func repositoryIndex(readyOnly: Bool = false) -> [ModelIndexEntry] {
        let lifecycles = registry.withLock { models in models.lifecycles.filter { $0.value.phase != .absent } }
        var entries: [ModelIndexEntry] = []
        for name in Set(repository.modelNames()).union(lifecycles.keys).sorted() {
            guard let lifecycle = lifecycles[name] else {
                if !readyOnly { entries.append(ModelIndexEntry(name: name, version: "", state: "", reason: "")) }
                continue
            }
            if let loaded = lifecycle.served {
                let missing = unreadyComposingModel(of: loaded.config)
                for version in Set(loaded.runners.keys).union(loaded.failures.keys).sorted() {
                    let failure = loaded.failures[version] ?? missing.map { "composing model '\($0)' is not ready" }
                    let state = failure == nil ? "READY" : "UNAVAILABLE"
                    if readyOnly && state != "READY" { continue }
                    entries.append(ModelIndexEntry(name: name, version: String(version), state: state, reason: failure ?? ""))
                }
            } else if !readyOnly {
                entries.append(ModelIndexEntry(name: name, version: "", state: Self.readiness(lifecycle.phase), reason: lifecycle.reason))
            }
        }
        return entries
    }

    /// Loads (or reloads) a model in explicit mode. A reload keeps the old versions serving until
    /// the new ones are ready. `configJSON` replaces config.pbtxt (Triton's `config` parameter).
    ///
    /// `files` carries model content instead of the repository's, as Triton's load API does: keys
    /// `file:<version>/<path>` (e.g. `file:1/model.onnx`), values the bytes. The files are written
    /// to a private folder, loaded from there and removed; a `configJSON` is then required.
    public func load(model name: String, configJSON: String? = nil, files: [String: Data] = [:]) async throws(TernError) {
        guard configuration.controlMode == .explicit else {
            throw TernError(.failedPrecondition, "explicit model load / unload is not allowed in model control mode '\(configuration.controlMode.rawValue)'; start with --model-control-mode explicit")
        }
        try Self.checkModelName(name)
        var override: ModelConfig? = nil
        if let configJSON, !configJSON.isEmpty {
            override = try ModelConfig.parse(json: configJSON, source: "load request for '\(name)'")
        }
        if !files.isEmpty {
            guard override != nil else {
                throw .invalidArgument("failed to load '\(name)': a load with file content needs a 'config' parameter")
            }
            let staging = try Self.stage(files, model: name)
            defer { try? FileManager.default.removeItem(at: staging) }
            try await loadModel(name, configOverride: override, loader: loader.reading(from: ModelRepository(root: staging)), versions: .policy)
            return
        }
        guard FileManager.default.fileExists(atPath: repository.modelDirectory(name).path) else {
            throw .notFound("failed to load '\(name)', no version is available: model folder \(repository.modelDirectory(name).path) does not exist")
        }
        try await loadModel(name, configOverride: override, versions: .policy)
    }

    /// Writes `file:<version>/<path>` contents under a new private folder as `<model>/<version>/<path>`.
    static func stage(_ files: [String: Data], model: String) throws(TernError) -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tern-load-\(UUID().uuidString)", isDirectory: true)
        do {
            for (key, data) in files {
                guard key.hasPrefix("file:") else { throw TernError.invalidArgument("unexpected load parameter '\(key)'") }
                let parts = key.dropFirst(5).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 2, let version = Int64(parts[0]), version > 0,
                    parts.dropFirst().allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("\\") })
                else {
                    throw TernError.invalidArgument("load parameter '\(key)' must be file:<version>/<path> inside the model folder")
                }
                let url = parts.reduce(root.appendingPathComponent(model, isDirectory: true)) { $0.appendingPathComponent($1) }
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try data.write(to: url)
            }
        } catch let error as TernError {
            try? FileManager.default.removeItem(at: root)
            throw error
        } catch {
            try? FileManager.default.removeItem(at: root)
            throw .internalError("cannot stage the model files of '\(model)': \(error)", cause: error)
        }
        return root
    }

    /// Unloads a model in explicit mode. Requests already running finish first.
    public func unload(model name: String) throws(TernError) {
        guard configuration.controlMode == .explicit else {
            throw TernError(.failedPrecondition, "explicit model load / unload is not allowed in model control mode '\(configuration.controlMode.rawValue)'; start with --model-control-mode explicit")
        }
        guard remove(name, reason: "unloaded", action: "unload") else { throw .notFound("failed to unload '\(name)': the model is not loaded") }
    }

    /// Drops a model's versions (requests already running finish first) and gives its memory back;
    /// a load in progress is abandoned. `forget` also drops its persisted decisions. False when
    /// the model is not known.
    func remove(_ name: String, reason: String, action: String, forget: Bool = false) -> Bool {
        let actions = registry.withLock { models -> [LifecycleAction<LoadedModel>]? in
            guard var lifecycle = models.lifecycles[name], lifecycle.phase != .absent else { return nil }
            let actions = lifecycle.unload(reason: reason, action: action, forget: forget)
            models.lifecycles[name] = lifecycle.isIdle ? nil : lifecycle
            ledger.release(name)  // with the state, under its lock (registry → books)
            return actions
        }
        guard let actions else { return false }
        perform(actions, model: name)
        logger.info("model unloaded", metadata: ["model": .string(name), "reason": .string(reason)])
        return true  // the memory goes back once running requests let go of the model (LoadedModel.release)
    }

    // MARK: Polling

    /// In poll mode, rescans the repository every `pollInterval` until cancelled: new and changed
    /// models are (re)loaded, removed ones unloaded. A changed model keeps serving its old version
    /// until the new one is ready.
    public func runRepositoryPolling() async {
        guard configuration.controlMode == .poll else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.pollInterval)
            await pollOnce()
        }
    }

    /// One poll-mode scan of the repository.
    public func pollOnce() async {
        let present = Set(repository.modelNames())
        let known = registry.withLock { models in models.lifecycles.filter { $0.value.phase != .absent }.mapValues(\.fingerprint) }
        for name in known.keys where !present.contains(name) {
            _ = remove(name, reason: "removed from the repository (poll mode)", action: "unload", forget: true)
        }
        for name in present.sorted() where known[name] != repository.fingerprint(of: name) {
            _ = try? await loadModel(name, configOverride: nil)
        }
    }

    // MARK: Internals

    /// Reserves `bytes` for loading `name` under the memory policy, evicting the least recently
    /// used other models first when the policy says so; throws when it cannot fit.
    func admit(_ bytes: MemoryEstimate, for name: String) throws(TernError) {
        var evicted: [String] = []
        var warmReleased = false
        while true {
            guard let shortfall = ledger.reserve(bytes, for: name) else { break }
            if !warmReleased {
                // The sets kept warm for an instant rollback go before any model that serves.
                warmReleased = true
                if releaseWarmSets() { continue }
            }
            guard ledger.policy.eviction == .lru, let victim = leastRecentlyUsed(excluding: name) else {
                let note = evicted.isEmpty ? "" : " (after evicting \(evicted.joined(separator: ", ")))"
                throw .unavailable("not enough memory to load '\(name)': it \(shortfall)\(note)")
            }
            logger.warning("evicting least recently used model to make room", metadata: ["model": .string(victim), "for": .string(name)])
            _ = remove(victim, reason: "evicted to make room for '\(name)' (--model-eviction lru)", action: "evict")
            evicted.append(victim)
        }
    }

    /// Ends every grace period now (their warm sets are released, a rollback then reloads);
    /// true when one was held.
    func releaseWarmSets() -> Bool {
        let released = registry.withLock { models -> [(String, [LifecycleAction<LoadedModel>])] in
            var released: [(String, [LifecycleAction<LoadedModel>])] = []
            for name in models.lifecycles.keys {
                guard let generation = models.lifecycles[name]?.servedGeneration, models.lifecycles[name]?.warm != nil else { continue }
                let actions = models.lifecycles[name]!.warmExpired(generation: generation)
                if !actions.isEmpty {
                    ledger.releaseWarm(name)
                    released.append((name, actions))
                }
            }
            return released
        }
        for (name, actions) in released {
            logger.info("warm previous versions released to make room", metadata: ["model": .string(name)])
            perform(actions, model: name)
        }
        return !released.isEmpty
    }

    /// The ready model, other than `name`, whose last inference is oldest (never used first).
    private func leastRecentlyUsed(excluding name: String) -> String? {
        let candidates = registry.withLock { models in
            models.lifecycles.compactMap { key, lifecycle -> (String, UInt64)? in
                guard key != name, let loaded = lifecycle.served, !loaded.runners.isEmpty else { return nil }
                return (key, loaded.runners.values.map(\.statistics.snapshot.lastInference).max() ?? 0)
            }
        }
        return candidates.min { ($0.1, $0.0) < ($1.1, $1.0) }?.0
    }

    /// The process's resident memory in bytes (Linux `/proc/self/statm`).
    static func residentBytes() -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = UInt64(fields[1]) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// A model name must be one folder of the repository: no path separators, not "." or "..".
    static func checkModelName(_ name: String) throws(TernError) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\0") else {
            throw .invalidArgument("'\(name)' is not a model name: it must name one folder of the model repository")
        }
    }
}
