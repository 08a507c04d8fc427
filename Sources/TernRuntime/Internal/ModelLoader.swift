import Foundation
import Logging
import Metrics
import TernCore

/// The outcome of loading one model: its final config, the versions that loaded and, per version
/// that failed, why.
struct LoadedModel: Sendable {
    var name: String
    var config: ModelConfig
    var runners: [Int64: ModelVersionRunner]
    var failures: [Int64: String]
    /// Gives freed memory back to the OS once the last copy of this model is gone — which may be
    /// after an unload returns, when a request still running (or a statistics snapshot) held it.
    let release = MemoryReturn()
}

/// Calls `InferenceServer.returnFreedMemory` (off the releasing thread) when deallocated.
final class MemoryReturn: Sendable {
    deinit {
        DispatchQueue.global(qos: .utility).async { InferenceServer.returnFreedMemory() }
    }
}

/// Turns a model folder into running instances: parses and validates config.pbtxt, completes it
/// from the model file, checks the two agree, and creates the instances the instance groups ask for.
struct ModelLoader: Sendable {
    let repository: ModelRepository
    let backends: [any Backend]
    let autoComplete: Bool
    let cpuCores: Int
    /// Most instances one model's instance groups may ask for.
    let maxInstances: Int
    let rateLimiter: RateLimiter?
    let logger: Logger
    /// The engine, for models that call other models (ensembles, request handlers).
    let link: EngineLink

    /// Loads `name`. Throws when the model as a whole cannot load (bad config, no versions, no
    /// backend); a failing version only marks that version unavailable. What blocks (ONNX Runtime
    /// session creation, warm-up runs) runs off the concurrency pool; asynchronous backends are awaited.
    func load(_ name: String, configOverride: ModelConfig? = nil, versions pinned: [Int64]? = nil) async throws(TernError) -> LoadedModel {
        let (config, backend, configPath) = try resolve(name, configOverride: configOverride)
        let available = repository.versions(of: name)
        let selected = try Self.choose(available, pinned: pinned, policy: config.versionPolicy, model: name)
        guard !selected.isEmpty else {
            throw .invalidArgument("model '\(name)': no version folder (\(repository.modelDirectory(name).path)/<number>/) to load")
        }
        var runners: [Int64: ModelVersionRunner] = [:]
        var failures: [Int64: String] = [:]
        var finalConfig = config
        for version in selected {
            do {
                let (runner, completed) = try await loadVersion(version, config: config, backend: backend, configPath: configPath)
                runners[version] = runner
                finalConfig = completed
            } catch {
                failures[version] = error.message
                logger.error("failed to load model version", metadata: ["model": .string(name), "version": .stringConvertible(version), "error": .string(error.message)])
            }
        }
        if runners.isEmpty, selected.count == 1, let only = failures.first {
            throw .invalidArgument(only.value)
        }
        return LoadedModel(name: name, config: finalConfig, runners: runners, failures: failures)
    }

    /// The model's config (parsed, overridden or empty for auto-complete) and its backend.
    private func resolve(_ name: String, configOverride: ModelConfig?) throws(TernError) -> (ModelConfig, any Backend, String) {
        // Messages name where the config came from: the file, or the load request that replaced it.
        let configPath = configOverride == nil ? repository.configFile(name).path : "the load request's config for '\(name)'"
        var config: ModelConfig
        if let configOverride {
            config = configOverride
        } else if let text = try repository.configText(name) {
            config = try ModelConfig.parse(text: text, file: configPath)
        } else if autoComplete {
            config = ModelConfig()
        } else {
            throw .invalidArgument("\(configPath): missing, and auto-complete is disabled (--disable-auto-complete-config)")
        }
        if config.name.isEmpty { config.name = name }
        guard config.name == name else {
            throw .invalidArgument("\(configPath): name: '\(config.name)' does not match the model folder '\(name)'")
        }
        // Before any file is looked at: paths stay inside the model's folder, sizes in range.
        try config.validatePaths(file: configPath)
        try config.validateLimits(file: configPath)
        let instances = config.instanceGroup.reduce(0) { total, group in
            total + max(Int(group.count), 1) * max(group.kind == .gpu ? group.gpus.count : 1, 1)
        }
        guard instances <= maxInstances else {
            throw .invalidArgument(
                "\(configPath): instance_group: asks for \(instances) instances, more than the limit of \(maxInstances) per model (\(cpuCores) cores; raise it with --max-instances-per-model)")
        }
        let backend = try chooseBackend(for: &config, configPath: configPath)
        return (config, backend, configPath)
    }

    /// Memory a load of `name` will take, estimated before loading (see `MemoryPolicy`): per
    /// version to load, its model file (or folder) plus 8 MB for ONNX Runtime's arenas, once per
    /// instance; a `KIND_GPU` instance's share goes on its GPU (8 MB of host RAM stays for its
    /// session). `tern.memory_estimate_mb` in the config replaces the host figure and
    /// `tern.gpu_memory_estimate_mb` the figure per GPU instance. nil when the model cannot be
    /// resolved (the load itself then reports why).
    func estimateBytes(_ name: String, configOverride: ModelConfig? = nil, versions pinned: [Int64]? = nil) -> MemoryEstimate? {
        guard let (config, backend, _) = try? resolve(name, configOverride: configOverride) else { return nil }
        func megabytes(_ key: String) -> UInt64? {
            guard let text = config.parameters[key]?.stringValue, let value = Double(text), value >= 0, value < 1e12 else { return nil }
            return UInt64(value * 1_048_576)
        }
        if backend.defaultModelFilename.isEmpty {  // ensembles, remote and routing models hold no weights
            return MemoryEstimate(hostBytes: megabytes("tern.memory_estimate_mb") ?? 0)
        }
        let filename = config.defaultModelFilename.isEmpty ? backend.defaultModelFilename : config.defaultModelFilename
        let placements = Self.placements(for: config, cpuCores: cpuCores)
        let versions = (try? Self.choose(repository.versions(of: name), pinned: pinned, policy: config.versionPolicy, model: name)) ?? []
        let arena: UInt64 = 8 << 20
        var estimate = MemoryEstimate()
        for version in versions {
            let versionFolder = repository.modelDirectory(name).appendingPathComponent("\(version)")
            // External-data models keep weights beside model.onnx: count the whole version folder.
            let bytes = Self.diskSize(versionFolder) ?? Self.diskSize(versionFolder.appendingPathComponent(filename)) ?? 0
            for placement in placements {
                if case .gpu(let device) = placement.kind {
                    estimate.hostBytes += arena
                    estimate.gpuBytes[device, default: 0] += megabytes("tern.gpu_memory_estimate_mb") ?? bytes + arena
                } else {
                    estimate.hostBytes += bytes + arena
                }
            }
        }
        if let host = megabytes("tern.memory_estimate_mb") { estimate.hostBytes = host }
        return MemoryEstimate(hostBytes: estimate.hostBytes, gpuBytes: estimate.gpuBytes)
    }

    /// The versions to load: the pinned ones (promote/rollback), which must exist, or the
    /// version policy's choice.
    static func choose(_ available: [Int64], pinned: [Int64]?, policy: Inference_ModelVersionPolicy, model: String) throws(TernError) -> [Int64] {
        guard let pinned else { return ModelRepository.selectVersions(available, policy: policy) }
        let missing = pinned.filter { !available.contains($0) }
        guard missing.isEmpty else {
            throw .notFound("model '\(model)' has no version folder \(missing.map(String.init).joined(separator: ", ")) (it has \(available.map(String.init).joined(separator: ", ")))")
        }
        return pinned.sorted()
    }

    static func diskSize(_ url: URL) -> UInt64? {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return nil }
        guard isDirectory.boolValue else {
            return (try? manager.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.uint64Value
        }
        var total: UInt64 = 0
        for case let file as URL in manager.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) ?? FileManager.DirectoryEnumerator() {
            total += UInt64((try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0)
        }
        return total
    }

    private func chooseBackend(for config: inout ModelConfig, configPath: String) throws(TernError) -> any Backend {
        if !config.backend.isEmpty {
            guard let backend = backends.first(where: { $0.name == config.backend }) else {
                throw .invalidArgument("\(configPath): backend: '\(config.backend)' is not available (Tern has: \(backends.map(\.name)))")
            }
            if config.platform.isEmpty { config.platform = backend.platforms.first ?? "" }
            return backend
        }
        if !config.platform.isEmpty {
            guard let backend = backends.first(where: { $0.platforms.contains(config.platform) }) else {
                throw .invalidArgument("\(configPath): platform: '\(config.platform)' is not supported (Tern supports: \(backends.flatMap(\.platforms)))")
            }
            config.backend = backend.name
            return backend
        }
        let name = config.name
        for backend in backends {
            let file = config.defaultModelFilename.isEmpty ? backend.defaultModelFilename : config.defaultModelFilename
            if repository.versions(of: name).contains(where: {
                FileManager.default.fileExists(atPath: repository.modelDirectory(name).appendingPathComponent("\($0)/\(file)").path)
            }) {
                config.backend = backend.name
                if config.platform.isEmpty { config.platform = backend.platforms.first ?? "" }
                return backend
            }
        }
        throw .invalidArgument("\(configPath): backend: not set, and no version folder holds a file a backend recognises")
    }

    private func loadVersion(
        _ version: Int64, config: ModelConfig, backend: any Backend, configPath: String
    ) async throws(TernError) -> (ModelVersionRunner, ModelConfig) {
        let name = config.name
        let filename = config.defaultModelFilename.isEmpty ? backend.defaultModelFilename : config.defaultModelFilename
        let modelFile = repository.modelDirectory(name).appendingPathComponent("\(version)/\(filename)")
        guard FileManager.default.fileExists(atPath: modelFile.path) else {
            throw .invalidArgument("model '\(name)' version \(version): \(modelFile.path) does not exist")
        }
        if let requestBackend = backend as? any RequestBackend {
            return try loadHandler(version, config: config, backend: requestBackend, configPath: configPath)
        }
        var placements = Self.placements(for: config, cpuCores: cpuCores)
        if let count = backend.defaultInstanceCount, config.instanceGroup.isEmpty {
            // Instances that mostly wait (ensemble steps, remote calls): allow many requests at once.
            placements = (0..<count).map { InstancePlacement(kind: .cpu, index: $0, intraOpThreads: 0) }
        }
        var instances: [any ModelInstance] = []
        var completed = config
        for placement in placements {
            let instance: any ModelInstance
            do {
                let logger = self.logger
                let completedSoFar = completed
                if let asynchronous = backend as? any AsynchronousBackend {
                    instance = try await asynchronous.loadInstance(modelPath: modelFile, config: completedSoFar, instance: placement, logger: logger)
                } else {
                    instance = try await Self.offPool {
                        try backend.makeInstance(modelPath: modelFile, config: completedSoFar, instance: placement, logger: logger)
                    }
                }
            } catch let error as TernError {
                throw TernError(error.code == .internalError ? .invalidArgument : error.code,
                                "model '\(name)' version \(version): \(error.message)")
            } catch {
                throw .invalidArgument("model '\(name)' version \(version): \(error)")
            }
            if instances.isEmpty {
                if autoComplete { completed.autoComplete(from: instance.signature) }
                try completed.validate(file: configPath)
                try completed.check(against: instance.signature, file: configPath)
                Self.recordProviders(of: instance, in: &completed, version: version)
            }
            instances.append(instance)
        }
        if !completed.modelWarmup.isEmpty {
            let started = ContinuousClock.now
            let directory = repository.modelDirectory(name)
            for instance in instances {
                let warmed = completed
                do {
                    try await Self.offPool { try ModelWarmup.run(on: instance, config: warmed, directory: directory) }
                } catch let error as TernError {
                    throw error
                } catch {
                    throw .internalError("model '\(name)' warm-up: \(error)", cause: error)
                }
            }
            logger.info("model warm-up done", metadata: [
                "model": .string(name), "version": .stringConvertible(version),
                "samples": .stringConvertible(completed.modelWarmup.count), "duration": .string("\(ContinuousClock.now - started)"),
            ])
        }
        let labels = try Self.readLabels(completed, directory: repository.modelDirectory(name))
        let runner = try ModelVersionRunner(
            name: name, version: version, config: completed, instances: instances, labels: labels,
            modelDirectory: repository.modelDirectory(name), rateLimiter: rateLimiter, link: link)
        logger.info("model version ready", metadata: [
            "model": .string(name), "version": .stringConvertible(version), "instances": .stringConvertible(instances.count),
        ])
        return (runner, completed)
    }

    /// What the first instance runs on, shown in the model's config (`tern.execution_providers`,
    /// and `tern.accelerator.fell_back_from` with a metric when the config let a missing provider
    /// fall back to the CPU).
    static func recordProviders(of instance: any ModelInstance, in config: inout ModelConfig, version: Int64) {
        func parameter(_ text: String) -> Inference_ModelParameter {
            var parameter = Inference_ModelParameter()
            parameter.stringValue = text
            return parameter
        }
        if !instance.executionProviders.isEmpty {
            config.parameters["tern.execution_providers"] = parameter(instance.executionProviders.joined(separator: ","))
        }
        if !instance.providerFallbacks.isEmpty {
            config.parameters["tern.accelerator.fell_back_from"] = parameter(instance.providerFallbacks.joined(separator: ","))
            for provider in instance.providerFallbacks {
                Gauge(label: "tern_execution_provider_fallback", dimensions: [
                    ("model", config.name), ("version", String(version)), ("provider", provider),
                ]).record(1)
            }
        }
    }

    /// Runs `body` on a Dispatch thread (it blocks: session creation, warm-up) and awaits it.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// A request-answering model version: its handler, checked against the config like a model file.
    private func loadHandler(
        _ version: Int64, config: ModelConfig, backend: any RequestBackend, configPath: String
    ) throws(TernError) -> (ModelVersionRunner, ModelConfig) {
        let handler: any RequestHandler
        do {
            handler = try backend.makeHandler(config: config, modelDirectory: repository.modelDirectory(config.name), logger: logger)
        } catch let error as TernError {
            throw TernError(error.code == .internalError ? .invalidArgument : error.code, "model '\(config.name)' version \(version): \(error.message)")
        } catch {
            throw .invalidArgument("model '\(config.name)' version \(version): \(error)")
        }
        var completed = config
        if autoComplete { completed.autoComplete(from: handler.signature) }
        try completed.validate(file: configPath)
        try completed.check(against: handler.signature, file: configPath)
        let runner = try ModelVersionRunner(
            name: config.name, version: version, config: completed, instances: [HandlerSignature(handler.signature)], labels: [:],
            modelDirectory: repository.modelDirectory(config.name), handler: handler, link: link)
        logger.info("model version ready", metadata: ["model": .string(config.name), "version": .stringConvertible(version), "backend": .string(backend.name)])
        return (runner, completed)
    }

    /// One placement per instance the instance groups ask for (one CPU instance when there are
    /// none). The ONNX Runtime thread budget: the machine's cores are split evenly over the
    /// instances, at least one thread each, so `count` instances never oversubscribe the CPU.
    static func placements(for config: ModelConfig, cpuCores: Int) -> [InstancePlacement] {
        var kinds: [InstancePlacement.Kind] = []
        for group in config.instanceGroup {
            let count = max(Int(group.count), 1)
            switch group.kind {
            case .gpu:
                let gpus = group.gpus.isEmpty ? [Int32(0)] : group.gpus
                for gpu in gpus { kinds += Array(repeating: .gpu(deviceID: Int(gpu)), count: count) }
            default:
                kinds += Array(repeating: .cpu, count: count)
            }
        }
        if kinds.isEmpty { kinds = [.cpu] }
        let threads = max(1, cpuCores / kinds.count)
        return kinds.enumerated().map { InstancePlacement(kind: $1, index: $0, intraOpThreads: threads) }
    }

    /// The same loader over another repository (a load request's own files).
    func reading(from other: ModelRepository) -> ModelLoader {
        ModelLoader(repository: other, backends: backends, autoComplete: autoComplete, cpuCores: cpuCores, maxInstances: maxInstances, rateLimiter: rateLimiter, logger: logger, link: link)
    }

    static func readLabels(_ config: ModelConfig, directory: URL) throws(TernError) -> [String: [String]] {
        var labels: [String: [String]] = [:]
        for output in config.output where !output.labelFilename.isEmpty {
            let file = directory.appendingPathComponent(output.labelFilename)
            guard let text = try? String(contentsOf: file, encoding: .utf8) else {
                throw .invalidArgument("output '\(output.name)': label_filename \(file.path) cannot be read")
            }
            labels[output.name] = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        }
        return labels
    }
}
