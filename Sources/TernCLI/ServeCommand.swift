import ArgumentParser
import Foundation
import GRPCCore
import Logging
import Metrics
import ServiceLifecycle
import TernCore
import TernDevice
import TernExperiments
import TernGRPC
import TernHTTP
import TernHybrid
import TernMetrics
import TernONNXRuntime
import TernRuntime
import TernStore
import TernTLS
import UnixSignals

/// `tern serve`: serves a model repository over HTTP, gRPC and Prometheus metrics.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the models of a Triton-style model repository.")

    @Option(name: .customLong("model-repository"), help: "The model repository folder.")
    var modelRepository: String

    @Option(name: .customLong("model-control-mode"), help: "none | explicit | poll")
    var modelControlMode: String = "none"

    @Option(name: .customLong("load-model"), help: "In explicit mode, a model to load at start ('*' for all). Repeatable.")
    var loadModels: [String] = []

    @Option(name: .customLong("repository-poll-secs"), help: "Seconds between repository scans in poll mode.")
    var pollSeconds: Int = 15

    @Flag(name: .customLong("disable-auto-complete-config"), help: "Require complete config.pbtxt files.")
    var disableAutoComplete = false

    @Option(name: .customLong("host"), help: "Address to listen on.")
    var host: String = "0.0.0.0"

    @Option(name: .customLong("http-port")) var httpPort: Int = 8000
    @Option(name: .customLong("grpc-port")) var grpcPort: Int = 8001
    @Option(name: .customLong("metrics-port")) var metricsPort: Int = 8002

    @Option(name: .customLong("max-request-size"), help: "Largest HTTP body or gRPC message accepted, in bytes.")
    var maxRequestSize: Int = 256 << 20

    @Option(name: .customLong("onnxruntime-library"), help: "Path of libonnxruntime.so (default: TERN_ONNXRUNTIME_LIBRARY, the pip package, system paths).")
    var onnxRuntimeLibrary: String?

    @Option(name: .customLong("log-verbose"), help: "0 info, 1 debug, 2 trace (ONNX Runtime's own lines included).")
    var logVerbose: Int = 0

    @Option(name: .customLong("rate-limit"), help: "off | execution_count: instances execute only while holding their rate_limiter resources.")
    var rateLimit: String = "off"

    @Option(name: .customLong("rate-limit-resource"), help: "NAME:COUNT[:DEVICE] the size of a rate-limiter resource (repeatable).")
    var rateLimitResources: [String] = []

    @Option(name: .customLong("memory-budget"), help: "Most memory the loaded models may hold together (e.g. 2GB, 512MB); a load beyond it is refused or evicts.")
    var memoryBudget: String?

    @Option(name: .customLong("memory-reserve"), help: "Free RAM a model load must leave (e.g. 256MB), checked against MemAvailable (on Jetson, shared with the GPU).")
    var memoryReserve: String?

    @Option(name: .customLong("model-eviction"), help: "none | lru: what a load that does not fit the memory budget does.")
    var modelEviction: String = "none"

    @Option(name: .customLong("history-db"), help: "SQLite file of the model lifecycle history and the pins and rejections that outlive a restart (default: history.sqlite in the repository's folder under --state-dir, <repository>-<digest>/; 'none' keeps it in memory).")
    var historyDatabase: String?

    @Option(name: .customLong("state-dir"), help: "Where the default history and experiments databases go, in a folder per model repository (default: $XDG_STATE_HOME/tern or ~/.local/state/tern).")
    var stateDir: String?

    @Option(name: .customLong("http-header-forward-pattern"), help: "Request headers whose whole name matches this regular expression reach the model as request parameters (as Triton's option; e.g. for an experiment's routing_key: header:x-device-id).")
    var httpHeaderForwardPattern: String?

    @Option(name: .customLong("grpc-header-forward-pattern"), help: "The same for gRPC metadata keys.")
    var grpcHeaderForwardPattern: String?

    @Flag(name: .customLong("allow-client-shm"), help: "Let clients register system and CUDA shared memory (off by default: a region gives a client read and write access to memory the server maps).")
    var allowClientSharedMemory = false

    @Option(name: .customLong("cuda-runtime-library"), help: "NVIDIA's CUDA runtime for CUDA shared memory, loaded with --allow-client-shm (default: libcudart.so.13, .so.12 or .so if the system has one; 'none' turns CUDA shared memory off).")
    var cudaRuntimeLibrary: String?

    @Option(name: .customLong("http-restricted-api"), help: "GROUP[,GROUP...]:KEY=VALUE: those API groups need the HTTP header KEY: VALUE (VALUE may be file:PATH or env:NAME). Groups: \(APIAccessPolicy.allGroups.joined(separator: ", ")). Repeatable.")
    var httpRestrictedAPIs: [String] = []

    @Option(name: .customLong("grpc-restricted-protocol"), help: "GROUP[,GROUP...]:KEY=VALUE for gRPC: the metadata key triton-grpc-protocol-KEY must carry VALUE. Repeatable.")
    var grpcRestrictedProtocols: [String] = []

    @Option(name: .customLong("max-connections"), help: "Connections held at once over all ports; more are refused (HTTP 503). Default: 1024, or less under a low descriptor limit.")
    var maxConnections: Int?

    @Option(name: .customLong("request-header-timeout"), help: "Seconds an HTTP request head may take to arrive (408 after).")
    var requestHeaderTimeout: Double = 30

    @Option(name: .customLong("request-body-timeout"), help: "Longest pause in seconds between two pieces of a request body (408 after).")
    var requestBodyTimeout: Double = 60

    @Option(name: .customLong("idle-timeout"), help: "Seconds a connection with no request in progress stays open.")
    var idleTimeout: Double = 300

    @Option(name: .customLong("exit-timeout-secs"), help: "On SIGTERM or SIGINT, how long the accepted requests (in progress and queued) may take to finish before the process exits anyway (as Triton's).")
    var exitTimeoutSeconds: Double = 30

    @Option(name: .customLong("grpc-max-concurrent-streams"), help: "gRPC calls one connection may have in progress at once.")
    var grpcMaxConcurrentStreams: Int = 128

    @Option(name: .customLong("max-instances-per-model"), help: "Most instances one model's instance groups may ask for (default: 8 per core, at least 16).")
    var maxInstancesPerModel: Int?

    @Option(name: .customLong("grpc-use-ssl"), help: "true: gRPC over TLS (Triton's flag), with --grpc-server-cert and --grpc-server-key.")
    var grpcUseSSL = false
    @Option(name: .customLong("grpc-use-ssl-mutual"), help: "true: gRPC clients must present a certificate signed by --grpc-root-cert (implies --grpc-use-ssl).")
    var grpcUseSSLMutual = false
    @Option(name: .customLong("grpc-server-cert"), help: "PEM certificate chain of the gRPC port.")
    var grpcServerCert: String?
    @Option(name: .customLong("grpc-server-key"), help: "PEM private key of the gRPC port.")
    var grpcServerKey: String?
    @Option(name: .customLong("grpc-root-cert"), help: "PEM CA certificates that client certificates must chain to (mutual TLS).")
    var grpcRootCert: String?
    @Option(name: .customLong("http-use-ssl"), help: "true: HTTPS on the HTTP port, with --http-server-cert and --http-server-key.")
    var httpUseSSL = false
    @Option(name: .customLong("http-use-ssl-mutual"), help: "true: HTTP clients must present a certificate signed by --http-root-cert (implies --http-use-ssl).")
    var httpUseSSLMutual = false
    @Option(name: .customLong("http-server-cert"), help: "PEM certificate chain of the HTTP port (and of the metrics port with --metrics-use-ssl).")
    var httpServerCert: String?
    @Option(name: .customLong("http-server-key"), help: "PEM private key of the HTTP port.")
    var httpServerKey: String?
    @Option(name: .customLong("http-root-cert"), help: "PEM CA certificates that HTTP client certificates must chain to (mutual TLS).")
    var httpRootCert: String?
    @Option(name: .customLong("metrics-use-ssl"), help: "true: HTTPS on the metrics port with the HTTP port's certificate, key and client verification.")
    var metricsUseSSL = false

    // The patterns' own options, one group each (see ServePlugin).
    @OptionGroup(title: "Edge-cloud hybrid") var hybrid: HybridServeOptions
    @OptionGroup(title: "A/B experiments") var experiments: ExperimentsServeOptions
    @OptionGroup(title: "Device telemetry and thermal policy") var device: DeviceServeOptions
    @OptionGroup(title: "Federated learning") var federated: FederatedServeOptions

    /// The patterns `tern serve` composes, in the order their services start.
    var plugins: [any ServePlugin] { [hybrid, experiments, device, federated] }

    /// A port's TLS from its options (nil: plain). SIGHUP re-reads the files.
    static func tls(
        _ port: String, use: Bool, mutual: Bool, cert: String?, key: String?, root: String?, protocols: [String]
    ) throws -> ServerTLS? {
        guard use || mutual else {
            if cert != nil || key != nil { throw ValidationError("--\(port)-server-cert/--\(port)-server-key are set but --\(port)-use-ssl is not true") }
            return nil
        }
        guard let cert, let key else { throw ValidationError("--\(port)-use-ssl needs --\(port)-server-cert and --\(port)-server-key") }
        do {
            return try ServerTLS(files: TLSFiles(certificateChain: cert, privateKey: key, rootCertificates: root, mutual: mutual), applicationProtocols: protocols)
        } catch {
            throw ValidationError("--\(port)-use-ssl: \(error.message)")
        }
    }

    /// Where a server keeps its state by default: one folder per model repository,
    /// `<state dir>/<folder name>-<digest of its absolute path>`, so servers of one user on
    /// different repositories never mix their histories, pins or experiments. The state dir is
    /// `--state-dir`, else `$XDG_STATE_HOME/tern`, else `$HOME/.local/state/tern`.
    func stateDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        let base = stateDir
            ?? environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 + "/tern" }
            ?? (environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? FileManager.default.homeDirectoryForCurrentUser.path) + "/.local/state/tern"
        let absolute = URL(fileURLWithPath: modelRepository).standardizedFileURL.resolvingSymlinksInPath().path
        let name = URL(fileURLWithPath: absolute).lastPathComponent.filter { $0.isLetter || $0.isNumber || "-_.".contains($0) }
        return base + "/\(name.isEmpty ? "repository" : name)-\(StableDigest.hex(absolute))"
    }

    /// The connection limits the options describe.
    func connectionLimits() throws -> ConnectionLimits {
        for (name, value) in [("--request-header-timeout", requestHeaderTimeout), ("--request-body-timeout", requestBodyTimeout), ("--idle-timeout", idleTimeout)]
        where !(value > 0 && value <= 86_400) {
            throw ValidationError("\(name) must be between 0 and 86400 seconds, not \(value)")
        }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        guard grpcMaxConcurrentStreams >= 1 else { throw ValidationError("--grpc-max-concurrent-streams must be at least 1") }
        return ConnectionLimits(
            maxConnections: maxConnections ?? ConnectionLimits.defaultMaxConnections,
            headerTimeout: .milliseconds(Int64(requestHeaderTimeout * 1000)), bodyTimeout: .milliseconds(Int64(requestBodyTimeout * 1000)),
            idleTimeout: .milliseconds(Int64(idleTimeout * 1000)), maxConcurrentStreams: grpcMaxConcurrentStreams)
    }

    /// `--memory-budget`/`--memory-reserve` sizes: bytes, or a number with KB, MB or GB.
    static func bytes(_ text: String, option: String) throws -> UInt64 {
        let upper = text.uppercased()
        let units: [(String, Double)] = [("GB", 1_073_741_824), ("MB", 1_048_576), ("KB", 1024), ("B", 1), ("", 1)]
        for (suffix, scale) in units where upper.hasSuffix(suffix) {
            if let value = Double(upper.dropLast(suffix.count)), value >= 0 { return UInt64(value * scale) }
        }
        throw ValidationError("\(option) \(text): expected a size such as 512MB or 2GB")
    }

    /// The memory policy the options describe; free RAM comes from the device telemetry.
    func memoryPolicy(telemetry: SystemTelemetry) throws -> MemoryPolicy {
        guard let eviction = MemoryPolicy.Eviction(rawValue: modelEviction) else {
            throw ValidationError("--model-eviction must be none or lru")
        }
        return MemoryPolicy(
            budgetBytes: try memoryBudget.map { try Self.bytes($0, option: "--memory-budget") },
            reserveBytes: try memoryReserve.map { try Self.bytes($0, option: "--memory-reserve") } ?? 0,
            availableBytes: { telemetry.availableMemoryBytes() }, eviction: eviction)
    }

    /// `--rate-limit-resource` values as sizes by name (one device: a device suffix is accepted and ignored).
    func resourceSizes() throws -> [String: Int] {
        var sizes: [String: Int] = [:]
        for option in rateLimitResources {
            let parts = option.split(separator: ":").map(String.init)
            guard parts.count == 2 || parts.count == 3, !parts[0].isEmpty, let count = Int(parts[1]), count >= 0 else {
                throw ValidationError("--rate-limit-resource \(option): expected NAME:COUNT or NAME:COUNT:DEVICE")
            }
            sizes[parts[0]] = count
        }
        return sizes
    }

    func run() async throws {
        let started = ContinuousClock.now
        guard let mode = ServerConfiguration.ModelControlMode(rawValue: modelControlMode) else {
            throw ValidationError("--model-control-mode must be none, explicit or poll")
        }
        guard ["off", "execution_count"].contains(rateLimit) else {
            throw ValidationError("--rate-limit must be off or execution_count")
        }
        // SIGHUP renews TLS certificates (TLSReloader): never let it end the process, even before
        // the reloader runs or when no port uses TLS.
        signal(SIGHUP, SIG_IGN)
        guard maxRequestSize > 0, maxRequestSize <= Int(UInt32.max) - 4096 else {
            throw ValidationError("--max-request-size must be between 1 and \(Int(UInt32.max) - 4096) bytes")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: modelRepository, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("--model-repository \(modelRepository): no such folder")
        }
        let limits = try connectionLimits()
        guard exitTimeoutSeconds >= 0, exitTimeoutSeconds <= 3600 else {
            throw ValidationError("--exit-timeout-secs must be between 0 and 3600 seconds, not \(exitTimeoutSeconds)")
        }
        let exitTimeout = Duration.milliseconds(Int64(exitTimeoutSeconds * 1000))
        let httpAccess: APIAccessPolicy, grpcAccess: APIAccessPolicy
        do {
            httpAccess = try APIAccessPolicy.parse(httpRestrictedAPIs, option: "--http-restricted-api")
            grpcAccess = try APIAccessPolicy.parse(grpcRestrictedProtocols, option: "--grpc-restricted-protocol", headerPrefix: "triton-grpc-protocol-")
        } catch {
            throw ValidationError(error.message)
        }
        let grpcTLS = try Self.tls(
            "grpc", use: grpcUseSSL, mutual: grpcUseSSLMutual, cert: grpcServerCert, key: grpcServerKey, root: grpcRootCert, protocols: ["h2"])
        let httpTLS = try Self.tls(
            "http", use: httpUseSSL, mutual: httpUseSSLMutual, cert: httpServerCert, key: httpServerKey, root: httpRootCert, protocols: ["http/1.1"])
        if metricsUseSSL, httpTLS == nil { throw ValidationError("--metrics-use-ssl uses the HTTP port's certificate: set --http-use-ssl true with its files") }
        let metricsTLS = metricsUseSSL ? httpTLS : nil
        if let maxInstancesPerModel, maxInstancesPerModel < 1 { throw ValidationError("--max-instances-per-model must be at least 1") }
        let resources = try resourceSizes()
        var memory = try memoryPolicy(telemetry: device.telemetry())
        let level: Logger.Level = logVerbose >= 2 ? .trace : logVerbose == 1 ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tern")
        let nvml = device.openNVML(logger: logger)
        if let nvml { memory.gpuAvailableBytes = { nvml.freeMemoryBytes(ofGPU: $0) } }
        let exporter = PrometheusExporter()
        MetricsSystem.bootstrap(exporter.factory)

        let backend: ONNXRuntimeBackend
        do {
            backend = try ONNXRuntimeBackend(locator: ORTLibraryLocator(explicitPath: onnxRuntimeLibrary), logger: logger)
        } catch {
            logger.critical("\(error.message)")
            throw ExitCode.failure
        }
        let history = try openHistory(logger: logger)

        // The patterns: their backends first (the engine needs them), then the patterns themselves.
        let context = ServeContext(
            logger: logger, metricsFactory: exporter.factory, stateDirectory: stateDirectory(), repositoryPath: URL(fileURLWithPath: modelRepository), nvml: nvml)
        let prepared: [PreparedPattern]
        do {
            prepared = try plugins.map { try $0.prepare(context) }
        } catch let failure as CommandFailure {
            logger.critical("\(failure.description)")
            throw ExitCode.failure
        }
        let engine = InferenceServer(
            configuration: ServerConfiguration(
                repositoryPath: URL(fileURLWithPath: modelRepository), controlMode: mode, startupModels: loadModels,
                autoCompleteConfig: !disableAutoComplete, pollInterval: .seconds(pollSeconds),
                rateLimit: rateLimit == "execution_count", rateLimitResources: resources, memory: memory,
                allowClientSharedMemory: allowClientSharedMemory, cudaRuntimeLibrary: cudaRuntimeLibrary, maxInstancesPerModel: maxInstancesPerModel),
            backends: [backend] + prepared.flatMap(\.backends), history: history, logger: logger)
        let patterns = try prepared.compactMap { try $0.make(engine) }

        let http = try HTTPFrontend.server(
            engine: engine, host: host, port: httpPort, maxBodySize: maxRequestSize, extensions: patterns.flatMap(\.httpRoutes),
            headerForwardPattern: httpHeaderForwardPattern, limits: limits, access: httpAccess, tls: httpTLS, logger: logger)
        var pages: [String: (group: String, answer: @Sendable () -> String)] = [:]
        for page in patterns.flatMap(\.metricsPages) { pages[page.path] = (page.group, page.render) }
        let metrics = HTTPFrontend.metricsServer(
            exporter: exporter, host: host, port: metricsPort, jsonRoutes: pages, limits: limits, access: httpAccess, tls: metricsTLS, logger: logger)
        let grpc = try GRPCFrontend.server(
            engine: engine, host: host, port: grpcPort, maxMessageSize: maxRequestSize, headerForwardPattern: grpcHeaderForwardPattern,
            extensions: patterns.flatMap(\.grpcServices), limits: limits, access: grpcAccess, tls: grpcTLS, drainGrace: exitTimeout,
            logger: logger)

        // Every port is bound before the models load: a port already taken fails the start at
        // once, naming the port, instead of after a long load with the other ports serving.
        let binds: [(String, () async throws(TernError) -> Int)] = [("HTTP KServe v2", http.bind), ("metrics", metrics.bind), ("gRPC KServe v2", grpc.bind)]
        for (name, bind) in binds {
            do {
                let port = try await bind()
                logger.info("\(name) endpoint listening", metadata: ["port": .stringConvertible(port)])
            } catch {
                logger.critical("\(error.message)")
                throw ExitCode.failure
            }
        }

        // The patterns' services run from the start (a remote model's connection is needed to
        // load it); the bound ports answer meanwhile, with health not ready until the start-up
        // loads are done.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: RepositoryPoller(engine: engine), successTerminationBehavior: .ignore)]
        services += patterns.flatMap(\.services).map { .init(service: $0, successTerminationBehavior: .ignore) }
        let reloadable = [httpTLS, grpcTLS].compactMap { $0 }
        if !reloadable.isEmpty {
            services.append(.init(service: TLSReloader(contexts: reloadable, logger: logger), successTerminationBehavior: .ignore))
        }
        let startup: @Sendable () async -> Void = {
            await engine.start()
            for entry in engine.repositoryIndex() {
                logger.info("model", metadata: [
                    "name": .string(entry.name), "version": .string(entry.version),
                    "state": .string(entry.state.isEmpty ? "NOT LOADED" : entry.state), "reason": .string(entry.reason),
                ])
            }
            for pattern in patterns { await pattern.modelsLoaded() }
            let milliseconds = (ContinuousClock.now - started).milliseconds
            logger.info("server ready", metadata: ["start_to_ready_ms": .string(String(format: "%.1f", milliseconds))])
        }
        // Last, so a shutdown drains the frontends first (see DrainedFrontends).
        services.append(.init(service: DrainedFrontends(
            frontends: [http, grpc, metrics], engine: engine, exitTimeout: exitTimeout, startup: startup, logger: logger)))
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A shutdown that stalls (a model call that never returns) still ends the process.
        configuration.maximumGracefulShutdownDuration = exitTimeout + .seconds(10)
        configuration.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
    }

    /// The lifecycle history the options name (SQLite by default, in memory with `none`).
    private func openHistory(logger: Logger) throws -> any LifecycleHistory {
        if historyDatabase == "none" { return InMemoryLifecycleHistory() }
        let path = historyDatabase ?? stateDirectory() + "/history.sqlite"
        do {
            return try SQLiteLifecycleHistory(path: path, logger: logger)
        } catch where historyDatabase == nil {
            // The default place is not writable (a read-only home on a device): keep serving.
            logger.warning("lifecycle history kept in memory only: cannot open \(path): \(error) (set --history-db PATH)")
            return InMemoryLifecycleHistory()
        } catch {
            logger.critical("cannot open the lifecycle history \(path): \(error) (use --history-db PATH or none)")
            throw ExitCode.failure
        }
    }
}

/// Re-reads the TLS certificate and key files on SIGHUP; open connections keep theirs.
struct TLSReloader: Service {
    let contexts: [ServerTLS]
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                for tls in contexts {
                    do throws(TernError) {
                        try tls.reload()
                        logger.info("TLS certificate reloaded", metadata: ["certificate": .string(tls.files.certificateChain)])
                    } catch {
                        logger.error("TLS reload failed; the previous certificate stays in use", metadata: ["error": .string(error.message)])
                    }
                }
            }
        }
    }
}

/// Runs the engine's poll-mode repository scan as a service (returns at once in other modes).
struct RepositoryPoller: Service {
    let engine: InferenceServer
    func run() async throws {
        await cancelWhenGracefulShutdown { await engine.runRepositoryPolling() }
    }
}
