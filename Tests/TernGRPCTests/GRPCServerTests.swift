import Foundation
import Testing
import TernClient
import TernCore
import NIOCore
import SwiftProtobuf
import TernRuntime
import TernTesting
@testable import TernGRPC

/// The gRPC frontend on a real socket (port 0), driven by Tern's own grpc-swift client.
@Suite struct GRPCServerTests {
    @Test func infersOverARealSocket() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub", "identity_bytes"])
        try await withTestServer(repo) { server in
            let client = server.grpc
            let a = Tensor(name: "INPUT0", shape: [1, 16], values: [Float](repeating: 2, count: 16))
            var b = a
            b.name = "INPUT1"
            let response = try await client.infer(InferenceRequest(modelName: "add_sub", id: "g", inputs: [a, b]))
            #expect(response.id == "g")
            #expect(try response.output(named: "OUTPUT0")?.values(as: Float.self) == [Float](repeating: 4, count: 16))
            let strings = Tensor(name: "INPUT0", shape: [1, 2], strings: [Data("a".utf8), Data("bc".utf8)])
            let echoed = try await client.infer(InferenceRequest(modelName: "identity_bytes", inputs: [strings]))
            #expect(try echoed.outputs[0].strings() == [Data("a".utf8), Data("bc".utf8)])
            // The server's verdict arrives as a TernError: an unknown model is "not found".
            await #expect(throws: TernError.self) { try await client.infer(InferenceRequest(modelName: "nope", inputs: [a])) }
            do {
                _ = try await client.infer(InferenceRequest(modelName: "nope", inputs: [a]))
            } catch {
                #expect((error as? TernError)?.code == .notFound)
            }
        }
    }
}

/// The method dispatch behind the HTTP/2 stream handler.
@Suite struct GRPCDispatcherTests {
    @Test func unknownMethodsAreUnimplementedAndBadMessagesInvalid() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        let dispatcher = KServeGRPCDispatcher(server: try await TestEnvironment.startedServer(repository: repo))
        guard case .now(.failure(let status)) = dispatcher.answer(method: "TraceSetting", message: .init()) else {
            Issue.record("TraceSetting answered")
            return
        }
        #expect(status.code == .unimplemented)
        guard case .now(.failure(let bad)) = dispatcher.answer(method: "ModelMetadata", message: .init(bytes: [0xFF, 0xFF, 0xFF])) else {
            Issue.record("garbage decoded")
            return
        }
        #expect(bad.code == .invalidArgument)
        guard case .now(.success(let live)) = dispatcher.answer(method: "ServerLive", message: .init()) else {
            Issue.record("ServerLive failed")
            return
        }
        #expect(try Inference_ServerLiveResponse(serializedBytes: live).live)
    }
}

/// Services added next to the KServe one: routed by path, errors as statuses, names unique.
@Suite struct GRPCExtensionServiceTests {
    @Test func routesByServiceAndMapsErrors() async throws {
        let repo = try TestEnvironment.repository(with: ["add_sub"])
        var dispatcher = KServeGRPCDispatcher(server: try await TestEnvironment.startedServer(repository: repo))
        let echo = GRPCExtensionService(name: "test.v1.Echo", group: "experiments") { method, message throws(TernError) in
            guard method == "Say" else { throw TernError(.unimplemented, "no \(method)") }
            guard !message.isEmpty else { throw .notFound("nothing to say") }
            return Data(message.reversed())
        }
        dispatcher.extensions["/test.v1.Echo/"] = echo
        #expect(dispatcher.extensionMethod("/test.v1.Echo/Say").map { $0.0.name + " " + $0.1 } == "test.v1.Echo Say")
        #expect(dispatcher.extensionMethod("/test.v1.Other/Say") == nil && dispatcher.extensionMethod("/test.v1.Echo") == nil)
        #expect(dispatcher.extensionMethod("/inference.GRPCInferenceService/ServerLive") == nil)
        func outcome(_ method: String, _ bytes: [UInt8]) async -> Result<[UInt8], GRPCStatus>? {
            guard case .later(let work) = dispatcher.answer(extension: echo, method: method, message: ByteBuffer(bytes: bytes)) else { return nil }
            return await work()
        }
        #expect(try await outcome("Say", [1, 2, 3])?.get() == [3, 2, 1])
        guard case .failure(let missing) = await outcome("Say", []), case .failure(let unknown) = await outcome("Shout", [1]) else {
            Issue.record("errors answered")
            return
        }
        #expect(missing.code == .notFound && missing.message == "nothing to say" && unknown.code == .unimplemented)

        let engine = try await TestEnvironment.startedServer(repository: repo)
        #expect(throws: TernError.self) {
            _ = try GRPCFrontend.server(engine: engine, host: "127.0.0.1", port: 0, extensions: [echo, echo], logger: TestEnvironment.logger)
        }
        let clash = GRPCExtensionService(name: "inference.GRPCInferenceService", group: "experiments") { _, message throws(TernError) in message }
        #expect(throws: TernError.self) {
            _ = try GRPCFrontend.server(engine: engine, host: "127.0.0.1", port: 0, extensions: [clash], logger: TestEnvironment.logger)
        }
    }
}
