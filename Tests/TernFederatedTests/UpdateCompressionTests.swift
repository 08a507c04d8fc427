import Foundation
import Testing
import TernCore
import TernTraining
@testable import TernFederated

/// Tern-to-Tern update encodings: sizes and the error they add.
@Suite struct UpdateCompressionTests {
    @Test func updatesRoundTripWithinTheirPrecision() throws {
        var generator = SplitMix64(seed: 3)
        let base: FLWeights = [FLArray(shape: [64, 10], values: (0..<640).map { _ in Double.random(in: -1...1, using: &generator) }),
                               FLArray(shape: [10], values: Array(repeating: 0.5, count: 10))]
        let trained = base.map { $0.with(values: $0.values.map { $0 + Double.random(in: -0.01...0.01, using: &generator) }) }
        let plain = try FLWire.parameters(trained).tensors.reduce(0) { $0 + $1.count }
        for compression in UpdateCompression.allCases {
            let wire = try compression.update(trained: trained, base: base)
            let bytes = wire.tensors.reduce(0) { $0 + $1.count }
            guard case .success(let back)? = UpdateCompression.apply(wire, base: base) else { Issue.record("\(compression) did not decode"); return }
            var worst = 0.0
            for (a, b) in zip(back, trained) { for (x, y) in zip(a.values, b.values) { worst = max(worst, abs(x - y)) } }
            switch compression {
            case .fp16:
                #expect(bytes < plain * 6 / 10 && worst < 1e-5, "fp16: \(bytes) of \(plain) bytes, error \(worst)")
            case .int8:
                #expect(bytes < plain * 4 / 10 && worst <= 0.02 / 255 / 2 + 1e-12, "int8: \(bytes) of \(plain) bytes, error \(worst)")
            }
            #expect(back.map(\.dataType) == [.fp32, .fp32])
        }
        let wrong = try UpdateCompression.int8.update(trained: [trained[1]], base: [base[1]])
        guard case .failure(.badParameters)? = UpdateCompression.apply(wrong, base: base) else { Issue.record("a short update must fail"); return }
        #expect(UpdateCompression.apply(try FLWire.parameters(trained), base: base) == nil)  // a plain answer is not an update
        #expect(UpdateCompression.supported(.string("fp16, int8")) == [.fp16, .int8] && UpdateCompression.supported(nil).isEmpty)
        let global = try UpdateCompression.global(base)
        #expect(global.tensorType == "tern.fp16" && global.tensors.reduce(0) { $0 + $1.count } < plain * 6 / 10)
    }
}
