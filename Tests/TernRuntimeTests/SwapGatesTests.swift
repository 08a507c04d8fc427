import Foundation
import Testing
import TernCore
@testable import TernRuntime

@Suite struct SwapGatesTests {
    @Test func labelsAreValuesOrTheIndexOfTheLargestElement() throws {
        let scalar = Tensor(name: "label", shape: [3], values: [Int64(4), 0, 9])
        #expect(try SwapGates.rowLabels(scalar, rows: 3) == [4, 0, 9])
        let probabilities = Tensor(name: "p", shape: [2, 3], values: [Float(0.1), 0.7, 0.2, 0.5, 0.2, 0.3])
        #expect(try SwapGates.rowLabels(probabilities, rows: 2) == [1, 0])
        #expect(throws: TernError.self) { try SwapGates.rowLabels(probabilities, rows: 4) }
        #expect(throws: TernError.self) { try SwapGates.rowLabels(Tensor(name: "s", shape: [1], strings: [Data()]), rows: 1) }
    }

    @Test func gatesAreReadFromTernParameters() throws {
        var config = ModelConfig()
        config.name = "m"
        #expect(try SwapGates(config: config).isEmpty)
        var parameter = Inference_ModelParameter()
        parameter.stringValue = "0.95"
        config.parameters["tern.gate.accuracy_min"] = parameter
        let gates = try SwapGates(config: config)
        #expect(gates.accuracyMin == 0.95 && !gates.isEmpty)
        parameter.stringValue = "fast"
        config.parameters["tern.gate.latency_p95_ms"] = parameter
        let error = #expect(throws: TernError.self) { try SwapGates(config: config) }
        #expect(error?.message.contains("tern.gate.latency_p95_ms") == true)
    }
}
