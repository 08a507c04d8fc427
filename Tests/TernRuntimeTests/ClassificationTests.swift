import Foundation
import Testing
import TernCore
@testable import TernRuntime

/// Triton's classification extension over every numeric output type.
@Suite struct ClassificationTests {
    @Test func unsignedSixtyFourBitScoresAreRankedByValue() throws {
        // 3 beats 2 beats 1: read as values, not as the bit patterns of doubles.
        let scores = Tensor(name: "scores", dataType: .uint64, shape: [1, 3], data: [UInt64(2), 3, 1].withUnsafeBytes { Data($0) })
        let top = try Classification.apply(to: scores, count: 2, batched: true, labels: ["a", "b", "c"])
        #expect(try top.strings().map { String(decoding: $0, as: UTF8.self) } == ["3.000000:1:b", "2.000000:0:a"])
        let ints = Tensor(name: "scores", dataType: .int64, shape: [3], data: [Int64(-5), 9, 4].withUnsafeBytes { Data($0) })
        #expect(try Classification.apply(to: ints, count: 1, batched: false, labels: []).strings().map { String(decoding: $0, as: UTF8.self) } == ["9.000000:1"])
    }
}
