import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Testing
import TernClient
import TernCore
import TernHTTP
import TernRuntime
import TernTesting

/// A backend whose model answers with where its input lies: the input's address modulo 64.
struct AddressProbeBackend: Backend {
    var name: String { "address_probe" }
    var platforms: [String] { ["address_probe_test"] }
    var defaultModelFilename: String { "model.txt" }

    final class Instance: ModelInstance {
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1])], outputs: [TensorSpec(name: "OFFSET", dataType: .int64, shape: [1])])
        func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
            let offset = inputs[0].data.withUnsafeBytes { Int64(Int(bitPattern: $0.baseAddress) % 64) }
            return [Tensor(name: "OFFSET", shape: [1], values: [offset])]
        }
    }

    func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        Instance()
    }
}

@Suite struct BodyAlignmentTests {
    /// A large binary request arrives in many socket reads; the frontend gathers it so that the
    /// tensor bytes after the JSON header start 64-byte aligned, whatever the header's length, and
    /// the model gets them in place (an odd header length would otherwise leave the floats at an
    /// odd address, which ONNX Runtime cannot read without a copy).
    @Test func binaryTensorsOfBodiesReadInPiecesAreAligned() async throws {
        let root = try TestEnvironment.temporaryDirectory("align")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("probe/1"), withIntermediateDirectories: true)
        try "probe".write(to: root.appendingPathComponent("probe/1/model.txt"), atomically: true, encoding: .utf8)
        try """
            name: "probe"
            backend: "address_probe"
            input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
            output [ { name: "OFFSET" data_type: TYPE_INT64 dims: [ 1 ] } ]
            """.write(to: root.appendingPathComponent("probe/config.pbtxt"), atomically: true, encoding: .utf8)
        let engine = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: root, controlMode: .none, cpuCores: 2),
            backends: [AddressProbeBackend()], logger: TestEnvironment.logger)
        await engine.start()
        try await withTestServer(engine: engine) { server in

            let count = 200_000  // 800 kB: many reads
            for idLength in [0, 1, 2, 3] {  // header lengths of every residue modulo 4
                var request = InferenceRequest(modelName: "probe", inputs: [Tensor(name: "X", shape: [Int64(count)], values: [Float](repeating: 1, count: count))])
                request.id = String(repeating: "x", count: idLength)
                let (payload, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: true)
                let (status, reply, headers) = try await HTTPServerTests().send(
                    server.httpPort, .POST, "/v2/models/probe/infer",
                    headers: [("Inference-Header-Content-Length", String(headerLength!))], body: payload)
                #expect(status == .ok)
                let response = try KServeHTTPEncoding.response(body: reply, headerLength: headers.first(name: "Inference-Header-Content-Length").flatMap(Int.init))
                #expect(try response.output(named: "OFFSET")?.values(as: Int64.self) == [0], "header of \(headerLength!) bytes")
            }
        }
    }
}
