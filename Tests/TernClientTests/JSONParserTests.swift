import Foundation
import Testing
import TernCore
@testable import TernClient

@Suite struct JSONParserTests {
    func parse(_ text: String) throws -> JSONValue { try JSONParser.parse(Data(text.utf8)) }

    @Test func parsesNumbersExactly() throws {
        let value = try parse("[0, -1, 9223372036854775807, -9223372036854775808, 18446744073709551615, 1.5, -2e-3, 1E3, 18446744073709551616]")
        let numbers = try #require(value.arrayValue).map { $0.numberValue! }
        #expect(numbers[0].int == 0 && numbers[1].int == -1)
        #expect(numbers[2].int == Int64.max && numbers[3].int == Int64.min)
        #expect(numbers[4].int == nil && numbers[4].uint == UInt64.max)
        #expect(numbers[5].int == nil && numbers[5].double == 1.5)
        #expect(numbers[6].double == -0.002 && numbers[7].double == 1000)
        #expect(numbers[8].int == nil && numbers[8].uint == nil && numbers[8].double == 18446744073709551616)
    }

    /// A request nested deeper than any tensor needs is refused, not followed down the stack.
    @Test func nestingBeyondTheLimitIsRefused() throws {
        _ = try parse(String(repeating: "[", count: 500) + String(repeating: "]", count: 500))
        for bracket in ["[", "{\"a\":"] {
            do {
                _ = try parse(String(repeating: bracket, count: 100_000))
                Issue.record("100 000 levels of \(bracket) were accepted")
            } catch let error as TernError {
                #expect(error.message.contains("nesting too deep"), "\(error.message)")
            }
        }
    }

    @Test func parsesStringsWithEscapes() throws {
        let value = try parse(#"{"a": "q\"\\\/\n\t\u00e9\ud83d\ude00", "b": [true, false, null], "c": {}}"#)
        #expect(value["a"]?.stringValue == "q\"\\/\n\té😀")
        #expect(value["b"]?.arrayValue?.count == 3 && value["b"]?.arrayValue?[0].boolValue == true)
        #expect(value["c"]?.objectValue?.members.isEmpty == true)
    }

    @Test func aRepeatedMemberNameResolvesToItsLastValue() throws {
        let value = try parse(#"{"a": 1, "b": 2, "a": 3}"#)
        #expect(value["a"]?.numberValue?.int == 3)
        let keys = value.objectValue.map { $0.map(\.key) }
        #expect(keys == ["b", "a"])
    }

    @Test func rejectsMalformedJSON() {
        for text in ["", "{", "[1,]", "{\"a\" 1}", "[1 2]", "tru", "\"abc", "[1] x", "{\"a\":-}", "\"\\x\"", "\"\\ud800\"", "[01.e]", "\"a\u{01}\""] {
            #expect(throws: TernError.self, "\(text)") { try parse(text) }
        }
    }

    @Test func packsALargeNumericArray() throws {
        // 150 528 floats: one 3x224x224 image as JSON.
        let count = 3 * 224 * 224
        let text = "[" + (0..<count).map { String(Float($0 % 255) / 255) }.joined(separator: ",") + "]"
        let value = try parse(text)
        let data = try JSONTensorCodec.pack(JSONTensorCodec.flatten(value), as: .fp32, name: "x")
        let tensor = Tensor(name: "x", dataType: .fp32, shape: [Int64(count)], data: data)
        let floats = try tensor.values(as: Float.self)
        #expect(floats.count == count && floats[254] == Float(254) / 255 && floats[255] == 0)
    }
}
