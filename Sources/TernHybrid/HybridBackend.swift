import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

/// A virtual model over a local model and a remote one (usually a `remote` backend model),
/// routing each request by a policy. config.pbtxt: `backend: "hybrid"`, the inputs and outputs
/// (those of the local model), and parameters:
///
/// - `tern.hybrid.local`, `tern.hybrid.remote`: the two models' names (this repository);
/// - `tern.hybrid.policy`: `edge`, `cloud`, `complexity`, `cascade` or `latency`;
/// - cascade: `tern.hybrid.confidence_output`, `tern.hybrid.confidence_measure` (max | margin |
///   entropy), `tern.hybrid.confidence_threshold` (offload when a row's confidence is below it);
/// - complexity: `tern.hybrid.complexity_threshold` (offload above it; a heuristic);
/// - latency: requests carry their deadline as Triton's `timeout` parameter (µs); the faster route
///   that meets it is taken. The edge estimate is the local model's queue (requests waiting,
///   instances busy, batch limit) times its measured execution time per batch size; the cloud
///   estimate is round trip + remote service time + the request's bytes ÷ the observed upload
///   bandwidth (`LinkModel`, fitted from the offloaded requests). One request in
///   `tern.hybrid.probe_every` (default 20) takes the other route to keep its estimate fresh;
/// - `tern.hybrid.local_only` (true/false): never offload (privacy); a request can say the same
///   with its own `tern.local_only` parameter;
/// - breaker: `tern.hybrid.breaker_failures` (default 3) consecutive remote failures open it for
///   `tern.hybrid.breaker_open_ms` (default 2000), then one probe request tests the remote.
///
/// Whatever the policy, a request the remote cannot answer (unreachable, timed out, 5xx, breaker
/// open) is answered locally. Each response carries `tern.route` (`edge` | `cloud`) and
/// `tern.route_reason` parameters; metrics: `tern_hybrid_requests_total{model,route,reason}`,
/// `tern_hybrid_request_duration_seconds{model,route}`, `tern_hybrid_offloaded_bytes_total{model}`,
/// `tern_hybrid_breaker_open{model}`.
public struct HybridBackend: RequestBackend {
    /// Makes the hybrid backend, which has no settings of its own: each model's config carries them.
    public init() {}
    /// The config `backend` name that selects this backend: "hybrid".
    public var name: String { "hybrid" }
    /// The only `platform` name this backend answers to: "hybrid".
    public var platforms: [String] { ["hybrid"] }
    /// Empty: a hybrid model's version folder holds no model file, so it has no weights to budget.
    public var defaultModelFilename: String { "" }

    /// Makes the router for one hybrid model from its config's `tern.hybrid.*` parameters, throwing when they are
    /// missing or invalid.
    public func makeHandler(config: ModelConfig, modelDirectory: URL, logger: Logger) throws -> any RequestHandler {
        HybridRouter(name: config.name, settings: try HybridSettings(config: config), signature: RemoteBackend.signature(of: config), logger: logger)
    }
}

struct HybridSettings: Sendable {
    enum Policy: String, Sendable { case edge, cloud, complexity, cascade, latency }
    var local: String
    var remote: String
    var policy: Policy
    var confidenceOutput: String?
    var measure = RoutingSignals.ConfidenceMeasure.max
    var confidenceThreshold = 0.9
    var complexityThreshold = 1.0
    var localOnly = false
    var probeEvery = 20
    var breakerFailures = 3
    var breakerOpenMs = 2000

    init(config: ModelConfig) throws(TernError) {
        func text(_ key: String) -> String? {
            guard let value = config.parameters["tern.hybrid." + key]?.stringValue, !value.isEmpty else { return nil }
            return value
        }
        func number(_ key: String) throws(TernError) -> Double? {
            guard let value = text(key) else { return nil }
            guard let number = Double(value), number >= 0 else {
                throw .invalidArgument("model '\(config.name)': tern.hybrid.\(key) must be a non-negative number, got '\(value)'")
            }
            return number
        }
        guard config.input.count > 0, config.output.count > 0 else {
            throw .invalidArgument("model '\(config.name)': a hybrid model declares its inputs and outputs (those of its local model) in config.pbtxt")
        }
        guard let local = text("local"), let remote = text("remote") else {
            throw .invalidArgument("model '\(config.name)': a hybrid model needs tern.hybrid.local and tern.hybrid.remote (model names)")
        }
        guard let policy = Policy(rawValue: text("policy") ?? "cascade") else {
            throw .invalidArgument("model '\(config.name)': tern.hybrid.policy must be edge, cloud, complexity, cascade or latency")
        }
        self.local = local
        self.remote = remote
        self.policy = policy
        confidenceOutput = text("confidence_output")
        if let name = text("confidence_measure") {
            guard let measure = RoutingSignals.ConfidenceMeasure(rawValue: name) else {
                throw .invalidArgument("model '\(config.name)': tern.hybrid.confidence_measure must be max, margin or entropy")
            }
            self.measure = measure
        }
        if let value = try number("confidence_threshold") { confidenceThreshold = value }
        if let value = try number("complexity_threshold") { complexityThreshold = value }
        if let value = try number("probe_every") { probeEvery = max(Int(value), 1) }
        if let value = try number("breaker_failures") { breakerFailures = max(Int(value), 1) }
        if let value = try number("breaker_open_ms") { breakerOpenMs = Int(value) }
        localOnly = text("local_only") == "true"
        if policy == .cascade {
            guard let output = confidenceOutput ?? config.output.first(where: { $0.dataType == .typeFp32 || $0.dataType == .typeFp64 })?.name,
                config.output.contains(where: { $0.name == output })
            else {
                throw .invalidArgument("model '\(config.name)': the cascade policy needs tern.hybrid.confidence_output naming an FP32/FP64 output")
            }
            confidenceOutput = output
        }
    }
}

/// Routes the requests of one hybrid model version.
final class HybridRouter: RequestHandler {
    enum Route: String { case edge, cloud }

    let name: String
    let settings: HybridSettings
    let signature: ModelSignature
    let logger: Logger
    private let state: Mutex<State>

    struct State {
        var breaker: CircuitBreaker
        var localMs = EWMA()
        var link = LinkModel()
        var requests = 0
        /// The local model's mean execution time by batch size, refreshed from its statistics.
        var computeMs: [Int: Double] = [:]
        var computeReadAt: UInt64 = 0
    }

    init(name: String, settings: HybridSettings, signature: ModelSignature, logger: Logger) {
        self.name = name
        self.settings = settings
        self.signature = signature
        self.logger = logger
        state = Mutex(State(breaker: CircuitBreaker(failureThreshold: settings.breakerFailures, openNs: UInt64(settings.breakerOpenMs) * 1_000_000)))
    }

    static func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func handle(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void) {
        let started = ContinuousClock.now
        let finish: @Sendable (Result<InferenceResponse, TernError>, Route, String) -> Void = { [self] result, route, reason in
            let elapsed = ContinuousClock.now - started
            Counter(label: "tern_hybrid_requests_total", dimensions: [("model", name), ("route", route.rawValue), ("reason", reason)]).increment()
            Timer(label: "tern_hybrid_request_duration_seconds", dimensions: [("model", name), ("route", route.rawValue)])
                .recordNanoseconds(Int64(elapsed.nanoseconds))
            completion(result.map { response in
                var response = response
                response.parameters["tern.route"] = .string(route.rawValue)
                response.parameters["tern.route_reason"] = .string(reason)
                // Only what the client asked for (a cascade also fetched the confidence output).
                if !request.outputs.isEmpty {
                    response.outputs.removeAll { output in !request.outputs.contains { $0.name == output.name } }
                }
                return response
            })
        }
        if settings.localOnly || request.parameters["tern.local_only"]?.boolValue == true {
            return runLocal(request, engine: engine) { finish($0, .edge, "local_only") }
        }
        switch settings.policy {
        case .edge:
            runLocal(request, engine: engine) { finish($0, .edge, "policy_edge") }
        case .cloud:
            offload(request, engine: engine, reason: "policy_cloud", finish: finish)
        case .complexity:
            let score = request.inputs.first.map(RoutingSignals.complexity) ?? 0
            if score > settings.complexityThreshold {
                offload(request, engine: engine, reason: "complex_input", finish: finish)
            } else {
                runLocal(request, engine: engine) { finish($0, .edge, "simple_input") }
            }
        case .cascade:
            cascade(request, engine: engine, finish: finish)
        case .latency:
            let (route, reason) = latencyChoice(request, engine: engine)
            if route == .cloud {
                offload(request, engine: engine, reason: reason, finish: finish)
            } else {
                runLocal(request, engine: engine) { finish($0, .edge, reason) }
            }
        }
    }

    /// Runs locally; when the local answer is not confident enough, asks the remote.
    private func cascade(
        _ request: InferenceRequest, engine: InferenceServer,
        finish: @escaping @Sendable (Result<InferenceResponse, TernError>, Route, String) -> Void
    ) {
        var local = request
        let output = settings.confidenceOutput!
        if !local.outputs.isEmpty, !local.outputs.contains(where: { $0.name == output }) {
            local.outputs.append(RequestedOutput(name: output))
        }
        runLocal(local, engine: engine) { [self] result in
            guard case .success(let response) = result, let tensor = response.output(named: output) else {
                return finish(result, .edge, "local_answer")
            }
            let rows = Int(tensor.shape.first ?? 1)
            let confident: Bool
            do throws(TernError) {
                confident = try RoutingSignals.confidence(tensor, rows: max(rows, 1), measure: settings.measure).allSatisfy { $0 >= settings.confidenceThreshold }
            } catch {
                return finish(.failure(error), .edge, "local_answer")
            }
            if confident { return finish(result, .edge, "confident") }
            offload(request, engine: engine, reason: "low_confidence", localAnswer: response, finish: finish)
        }
    }

    /// The faster route that meets the request's deadline (`timeout`, µs); local when unsure.
    private func latencyChoice(_ request: InferenceRequest, engine: InferenceServer) -> (Route, String) {
        let deadlineMs = request.parameters["timeout"]?.integerValue.map { Double($0) / 1000 }
        let bytes = Double(request.inputs.reduce(0) { $0 + $1.data.count })
        let occupancy = (try? engine.occupancy(model: settings.local)) ?? nil
        let now = Self.nowNs()
        let stale = state.withLock { now - $0.computeReadAt > 250_000_000 }
        let compute = stale ? Self.computeTable(engine, model: settings.local) : nil
        return state.withLock { s in
            if let compute {
                s.computeMs = compute
                s.computeReadAt = now
            }
            s.requests += 1
            let local = LocalEstimate.ms(occupancy: occupancy, computeMs: s.computeMs, fallback: s.localMs.value)
            let remote = s.link.estimate(bytes: bytes)
            return Self.choose(localMs: local, remoteMs: remote, deadlineMs: deadlineMs, probe: s.requests % settings.probeEvery == 0)
        }
    }

    /// The latency policy's decision on two estimates (nil: not measured yet).
    static func choose(localMs local: Double?, remoteMs remote: Double?, deadlineMs: Double?, probe: Bool) -> (Route, String) {
        if let deadlineMs, let remote, remote > deadlineMs, local.map({ $0 <= deadlineMs }) ?? true { return (.edge, "deadline") }
        guard let remote, let local else {
            // Learn the route not measured yet.
            return local == nil ? (.edge, "probe") : (.cloud, "probe")
        }
        if probe { return remote < local ? (.edge, "probe") : (.cloud, "probe") }
        if let deadlineMs, local > deadlineMs, remote <= deadlineMs { return (.cloud, "deadline") }
        return remote < local ? (.cloud, "faster") : (.edge, "faster")
    }

    /// Mean execution time (ms) by batch size of the serving version of `model`.
    static func computeTable(_ engine: InferenceServer, model: String) -> [Int: Double] {
        guard let statistics = (try? engine.statistics(model: model))?.last else { return [:] }
        var table: [Int: Double] = [:]
        for batch in statistics.batchStats where batch.computeInfer.count > 0 {
            let ns = batch.computeInput.ns + batch.computeInfer.ns + batch.computeOutput.ns
            table[Int(batch.batchSize)] = Double(ns) / Double(batch.computeInfer.count) / 1e6
        }
        return table
    }

    private func runLocal(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void) {
        var forwarded = request
        forwarded.modelName = settings.local
        forwarded.modelVersion = nil
        let started = ContinuousClock.now
        engine.submit(forwarded, allowInline: true) { [self] result in
            if case .success = result { recordLocal(since: started) }
            completion(result)
        }
    }

    /// Sends the request to the remote model unless the breaker is open; any remote failure is
    /// answered locally (or with the local answer a cascade already has).
    private func offload(
        _ request: InferenceRequest, engine: InferenceServer, reason: String, localAnswer: InferenceResponse? = nil,
        finish: @escaping @Sendable (Result<InferenceResponse, TernError>, Route, String) -> Void
    ) {
        let allowed = state.withLock { $0.breaker.allow(nowNs: Self.nowNs()) }
        let fallback: @Sendable (String) -> Void = { [self] why in
            if let localAnswer { return finish(.success(localAnswer), .edge, why) }
            runLocal(request, engine: engine) { finish($0, .edge, why) }
        }
        guard allowed else { return fallback("breaker_open") }
        var forwarded = request
        forwarded.modelName = settings.remote
        forwarded.modelVersion = nil
        let bytes = request.inputs.reduce(0) { $0 + $1.data.count }
        let started = ContinuousClock.now
        engine.submit(forwarded, allowInline: false) { [self] result in
            switch result {
            case .success:
                let ms = (ContinuousClock.now - started).milliseconds
                state.withLock { s in
                    s.breaker.recordSuccess()
                    s.link.add(bytes: Double(bytes), ms: ms)
                }
                Counter(label: "tern_hybrid_offloaded_bytes_total", dimensions: [("model", name)]).increment(by: bytes)
                breakerGauge()
                finish(result, .cloud, reason)
            case .failure(let error) where error.code != .invalidArgument:
                // Unreachable, timed out, failing, or not loaded here (e.g. the cloud was down when
                // this server started and its metadata could not be read): answer locally.
                let opened = state.withLock { s in
                    let before = s.breaker.state
                    s.breaker.recordFailure(nowNs: Self.nowNs())
                    return before != .open && s.breaker.state == .open
                }
                if opened { logger.warning("remote route failing: breaker open, answering locally", metadata: ["model": .string(name), "error": .string(error.message)]) }
                breakerGauge()
                fallback("cloud_failed")
            case .failure:
                // The remote refused the request itself (bad input): the local model would too.
                finish(result, .cloud, reason)
            }
        }
    }

    private func recordLocal(since start: ContinuousClock.Instant) {
        let ms = (ContinuousClock.now - start).milliseconds
        state.withLock { $0.localMs.add(ms) }
    }

    private func breakerGauge() {
        let open = state.withLock { $0.breaker.state != .closed }
        Gauge(label: "tern_hybrid_breaker_open", dimensions: [("model", name)]).record(open ? 1 : 0)
    }
}
