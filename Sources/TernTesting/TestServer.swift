import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TernGRPC
import TernHTTP
import TernRuntime

/// Runs the HTTP and gRPC frontends of an engine in-process on ports chosen by the OS, for tests
/// that need real sockets.
public final class TestServer: Sendable {
    public let engine: InferenceServer
    public let httpPort: Int
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

    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}
