import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TernClient
import TernGRPC
import TernHTTP
import TernRuntime

/// Runs the HTTP and gRPC frontends of an engine in-process on ports chosen by the OS, for tests
/// that need real sockets.
public final class TestServer: Sendable {
    /// The engine behind the frontends.
    public let engine: InferenceServer
    /// The HTTP frontend's port.
    public let httpPort: Int
    /// The gRPC frontend's port.
    public let grpcPort: Int
    private let task: Task<Void, any Error>
    private let group: ServiceGroup

    private init(engine: InferenceServer, httpPort: Int, grpcPort: Int, task: Task<Void, any Error>, group: ServiceGroup) {
        self.engine = engine
        self.httpPort = httpPort
        self.grpcPort = grpcPort
        self.task = task
        self.group = group
    }

    /// Starts both frontends on port 0 and returns once they listen.
    public static func start(engine: InferenceServer, maxBodySize: Int = 256 << 20) async throws -> TestServer {
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let http = try HTTPFrontend.server(engine: engine, host: "127.0.0.1", port: 0, maxBodySize: maxBodySize, logger: TestEnvironment.logger) { port in
            portContinuation.yield(port)
        }
        let grpc = try GRPCFrontend.server(engine: engine, host: "127.0.0.1", port: 0, logger: TestEnvironment.logger)
        let group = ServiceGroup(services: [http, grpc], logger: TestEnvironment.logger)
        let task = Task { try await group.run() }
        var iterator = portStream.makeAsyncIterator()
        guard let httpPort = await iterator.next(), let grpcPort = await grpc.listeningPort else {
            task.cancel()
            throw CancellationError()
        }
        return TestServer(engine: engine, httpPort: httpPort, grpcPort: grpcPort, task: task, group: group)
    }

    /// Shuts both frontends down gracefully and waits for them.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}

/// What a scoped test server hands its body: the engine, and one client per protocol connected
/// to it.
public struct TestClients: Sendable {
    /// The engine behind the frontends.
    public let engine: InferenceServer
    /// A pooled HTTP/1.1 client of the HTTP frontend.
    public let http: KServeHTTPClient
    /// A gRPC client of the gRPC frontend (its connection runs for the body's duration).
    public let grpc: KServeGRPCClient
    /// The HTTP frontend's port.
    public let httpPort: Int
    /// The gRPC frontend's port.
    public let grpcPort: Int
}

/// Runs `body` with an engine over `repository` served on ports chosen by the OS, and KServe
/// clients of both frontends; the clients and frontends are shut down, and awaited, when `body`
/// returns or throws.
///
///     try await withTestServer(repository) { server in
///         let response = try await server.http.infer(request)
///     }
public func withTestServer<T: Sendable>(
    _ repository: URL, mode: ServerConfiguration.ModelControlMode = .none, startupModels: [String] = [],
    maxBodySize: Int = 256 << 20, _ body: (TestClients) async throws -> T
) async throws -> T {
    let engine = try await TestEnvironment.startedServer(repository: repository, mode: mode, startupModels: startupModels)
    return try await withTestServer(engine: engine, maxBodySize: maxBodySize, body)
}

/// Runs `body` with `engine` (already started) served on ports chosen by the OS, and clients of
/// both frontends; everything is shut down and awaited afterwards.
public func withTestServer<T: Sendable>(
    engine: InferenceServer, maxBodySize: Int = 256 << 20, _ body: (TestClients) async throws -> T
) async throws -> T {
    let server = try await TestServer.start(engine: engine, maxBodySize: maxBodySize)
    let outcome: Result<T, any Error>
    do {
        let http = try KServeHTTPClient(host: "127.0.0.1", port: server.httpPort)
        defer { http.close() }
        outcome = .success(try await KServeGRPCClient.with(host: "127.0.0.1", port: server.grpcPort) { grpc in
            try await body(TestClients(engine: engine, http: http, grpc: grpc, httpPort: server.httpPort, grpcPort: server.grpcPort))
        })
    } catch {
        outcome = .failure(error)
    }
    await server.stop()
    return try outcome.get()
}
