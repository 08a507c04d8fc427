import Foundation
import Testing
@testable import TernCore

@Suite struct TensorTests {
    @Test func bytesCodecRoundTrips() throws {
        let elements = [Data("hello".utf8), Data(), Data([0, 255, 7])]
        let encoded = BytesCodec.encode(elements)
        #expect(encoded.count == 4 * 3 + 5 + 0 + 3)
        #expect(encoded.prefix(4) == Data([5, 0, 0, 0]))
        #expect(try BytesCodec.decode(encoded, name: "t") == elements)
        #expect(try BytesCodec.count(in: encoded, name: "t") == 3)
    }

    @Test func bytesCodecRejectsTruncatedData() {
        #expect(throws: TernError.self) { try BytesCodec.decode(Data([5, 0, 0, 0, 65]), name: "t") }
        #expect(throws: TernError.self) { try BytesCodec.decode(Data([5, 0]), name: "t") }
    }

    @Test func numericTensorsCheckTheirByteSize() throws {
        let tensor = Tensor(name: "x", shape: [2, 3], values: [Float](repeating: 1, count: 6))
        try tensor.validateByteSize()
        #expect(try tensor.values(as: Float.self) == [1, 1, 1, 1, 1, 1])
        var short = tensor
        short.data = short.data.prefix(20)
        #expect(throws: TernError.self) { try short.validateByteSize() }
        #expect(throws: TernError.self) { _ = try tensor.values(as: Int32.self) }
    }

    @Test func bytesTensorsCountElements() throws {
        let tensor = Tensor(name: "s", shape: [1, 2], strings: [Data("a".utf8), Data("bc".utf8)])
        try tensor.validateByteSize()
        var wrongShape = tensor
        wrongShape.shape = [1, 3]
        #expect(throws: TernError.self) { try wrongShape.validateByteSize() }
    }

    @Test func dataTypesMapBothWays() {
        for type in DataType.allCases {
            #expect(DataType(configType: type.configType) == type)
            #expect(DataType(protocolName: type.protocolName) == type)
        }
        #expect(DataType(configType: .typeString) == .bytes)
        #expect(DataType(configType: .typeInvalid) == nil)
        #expect(DataType.fp16.elementSize == 2 && DataType.bytes.elementSize == nil)
    }
}
