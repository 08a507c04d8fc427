import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import TernCore
import TernClient

/// `tern infer`: sends one request over HTTP or gRPC and prints the outputs as JSON.
struct InferCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Send one inference request and print the outputs.",
        discussion: """
            Inputs are NAME=FILE.npy, or NAME=FILE.json holding {"shape": [...], "datatype": "FP32", "data": [...]}.
            Example (with `make serve` running): tern infer -m digits_mlp --input X=examples/inputs/digit.json --classification 3
            """)

    @Option(name: [.customShort("m"), .customLong("model")]) var model: String
    @Option(name: .customLong("model-version")) var version: Int64?
    @Option(name: .customLong("input"), help: "NAME=FILE.npy or NAME=FILE.json (repeatable)") var inputs: [String] = []
    @Option(name: .customLong("output"), help: "Output to return (repeatable; default all)") var outputs: [String] = []
    @Option(name: .customLong("classification"), help: "Return the top K classes of each output") var classes: Int = 0
    @Option(name: .customLong("protocol"), help: "http | http-json | grpc") var transport: String = "http"
    @Option(name: .customLong("host")) var host: String = "127.0.0.1"
    @Option(name: .customLong("http-port")) var httpPort: Int = 8000
    @Option(name: .customLong("grpc-port")) var grpcPort: Int = 8001

    func run() async throws {
        var tensors: [Tensor] = []
        for argument in inputs {
            guard let equals = argument.firstIndex(of: "=") else { throw ValidationError("--input takes NAME=FILE") }
            let name = String(argument[..<equals]), file = String(argument[argument.index(after: equals)...])
            if file.hasSuffix(".npy") {
                tensors.append(try NumpyFile.read(file, name: name))
            } else {
                let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file)))
                guard let entry = object as? [String: Any], let typeName = entry["datatype"] as? String,
                    let type = DataType(protocolName: typeName), let shape = entry["shape"] as? [NSNumber], let data = entry["data"]
                else { throw ValidationError("\(file): expected {\"shape\", \"datatype\", \"data\"}") }
                tensors.append(try KServeHTTPEncoding.tensor(name: name, dataType: type, shape: shape.map(\.int64Value), json: data))
            }
        }
        guard classes >= 0 else { throw ValidationError("--classification must be 0 or more") }
        guard ["grpc", "http", "http-json"].contains(transport) else { throw ValidationError("--protocol must be http, http-json or grpc") }
        var wanted = outputs
        if classes > 0, wanted.isEmpty {
            // Classification is asked per output: without --output, ask it of every output.
            wanted = try await outputNames()
        }
        let request = InferenceRequest(
            modelName: model, modelVersion: version, inputs: tensors,
            outputs: wanted.map { RequestedOutput(name: $0, classificationCount: classes) })
        let response: InferenceResponse
        switch transport {
        case "grpc":
            response = try await KServeGRPCClient.with(host: host, port: grpcPort) { try await $0.infer(request) }
        case "http", "http-json":
            response = try await KServeHTTPClient(host: host, port: httpPort).infer(request, binary: transport == "http")
        default:
            throw ValidationError("--protocol must be http, http-json or grpc")
        }
        var printed: [[String: Any]] = []
        for tensor in response.outputs {
            printed.append(["name": tensor.name, "datatype": tensor.dataType.protocolName, "shape": tensor.shape, "data": try KServeHTTPEncoding.jsonValues(tensor)])
        }
        let json = try JSONSerialization.data(withJSONObject: ["model_name": response.modelName, "model_version": String(response.modelVersion), "outputs": printed], options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }

    /// The model's output names, from its metadata.
    func outputNames() async throws -> [String] {
        if transport == "grpc" {
            return try await KServeGRPCClient.with(host: host, port: grpcPort) { try await $0.signature(model: model, version: version) }.outputs.map(\.name)
        }
        return try await KServeHTTPClient(host: host, port: httpPort).signature(model: model, version: version).outputs.map(\.name)
    }
}
