import Foundation
import Testing
import TernCore
import TernTraining
@testable import TernFederated

/// `.npy` files as np.save writes them, per-round expressions and the YAML settings.
@Suite struct FLValuesTests {
    @Test func npyBytesMatchNumpySave() throws {
        let array = FLArray(dataType: .fp32, shape: [3, 4], values: (0..<12).map { Double($0) / 4 })
        let data = try array.npy()
        // np.save(np.zeros((3, 4), np.float32)): 128 header bytes, this exact header text.
        #expect(data.count == 128 + 48)
        let header = String(decoding: data[10..<128], as: UTF8.self)
        #expect(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"))
        #expect(header.hasSuffix(" \n"))
        let back = try FLArray(npy: data, index: 0)
        #expect(back == array)
        let vector = try FLArray(dataType: .fp64, shape: [7], values: Array(repeating: 1.5, count: 7)).npy()
        #expect(String(decoding: vector[10..<70], as: UTF8.self).contains("'shape': (7,), }"))
        #expect(vector.count == 128 + 56)
        let scalar = try FLArray(dataType: .int64, shape: [], values: [3]).npy()
        #expect(scalar.count == 128 + 8)
        #expect(try FLArray(npy: scalar, index: 0).values == [3])
    }

    @Test func roundExpressionsFollowPythonRules() throws {
        let epochs = try RoundExpression("5 if round < 10 else 3")
        #expect(try epochs.value(round: 1) == .int(5))
        #expect(try epochs.value(round: 10) == .int(3))
        let rate = try RoundExpression("0.001 * 0.95^round")
        guard case .double(let r2) = try rate.value(round: 2) else { Issue.record("not a double"); return }
        #expect(abs(r2 - 0.001 * 0.9025) < 1e-15)
        #expect(try RoundExpression("round ** 2 - 1").value(round: 3) == .int(8))
        #expect(try RoundExpression("-2 ^ 2").value(round: 1) == .int(-4))  // as in Python
        #expect(try RoundExpression("round % 2 == 0 and round > 2").value(round: 4) == .bool(true))
        #expect(try RoundExpression("(round + 1) / 2").value(round: 2) == .double(1.5))
        #expect(try RoundExpression("1 if round <= 2 else 2 if round <= 4 else 3").value(round: 3) == .int(2))
        #expect(try !RoundExpression("32").usesRound)
        #expect(throws: TernError.self) { try RoundExpression("5 if round < 10") }
        #expect(throws: TernError.self) { try RoundExpression("round +") }
        #expect(throws: TernError.self) { try RoundExpression("rounds * 2") }
        #expect(throws: TernError.self) { try RoundExpression("1 / (round - 1)").value(round: 1) }
    }

    @Test func yamlSettingsAndTheirErrors() throws {
        let settings = try FLSettings.parse(yaml: """
            address: 127.0.0.1:9091
            num_rounds: 12
            strategy: {name: FedProx, proximal_mu: 0.5}
            min_fit_clients: 3
            fraction_fit: 0.5
            round_timeout: 30
            accept_failures: false
            fit_config:
              local_epochs: 5 if round < 10 else 3
              learning_rate: 0.001 * 0.95^round
              batch_size: 32
              optimizer: sgd
            """)
        #expect(settings.address == "127.0.0.1:9091")
        #expect(settings.rounds == 12 && settings.minFitClients == 3 && settings.fractionFit == 0.5)
        #expect(settings.strategy == .fedprox && settings.strategyOptions.proximalMu == 0.5)
        #expect(settings.roundTimeout == 30 && !settings.acceptFailures)
        let engine = try RoundEngine(settings: settings, initialWeights: [FLArray(shape: [1], values: [0])])
        let round1 = engine.fitConfig(round: 1)
        #expect(round1["local_epochs"] == .int(5) && round1["batch_size"] == .int(32) && round1["optimizer"] == .string("sgd"))
        #expect(round1["proximal_mu"] == .double(0.5))
        #expect(engine.fitConfig(round: 11)["local_epochs"] == .int(3))
        let error = #expect(throws: TernError.self) { try FLSettings.parse(yaml: "num_rounds: 3\nnum_round: 4\n") }
        #expect(error?.message.contains("num_round") == true)
        #expect(throws: TernError.self) { try FLSettings.parse(yaml: "strategy: fedbest\n") }
        #expect(throws: TernError.self) { try FLSettings.parse(yaml: "num_rounds: three\n") }
        var bad = FLSettings()
        bad.fractionFit = 1.5
        #expect(throws: TernError.self) { try bad.validate() }
        var oneSided = FLSettings()
        oneSided.tlsCertificate = "cert.pem"
        #expect(throws: TernError.self) { try oneSided.validate() }
        #expect(throws: TernError.self) { try FLServer.split(address: "localhost") }
        #expect(try FLServer.split(address: "[::]:8080") == ("0.0.0.0", 8080))
    }
}
