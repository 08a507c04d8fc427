import Foundation
import NIOCore
import Testing
import TernCore
@testable import TernHTTP

@Suite struct JSONWriterTests {
    func text(_ write: (inout JSONWriter) -> Void) -> String {
        var json = JSONWriter(buffer: ByteBuffer())
        write(&json)
        return String(buffer: json.buffer)
    }

    @Test func writesIntegersInPlaceAtEveryWidth() {
        let written = text { json in
            json.beginArray()
            for value: Int64 in [0, 7, -7, 10, 99, 100, -1_000_000, Int64.max, Int64.min] { json.integer(value) }
            json.integer(UInt64.max)
            json.integer(Int8.min)
            json.quotedInteger(Int64(42))
            json.endArray()
        }
        #expect(written == #"[0,7,-7,10,99,100,-1000000,9223372036854775807,-9223372036854775808,18446744073709551615,-128,"42"]"#)
    }

    @Test func separatesValuesAtEveryDepth() throws {
        let written = text { json in
            json.beginObject()
            json.key("a"); json.beginArray(); json.beginObject(); json.endObject(); json.beginArray(); json.endArray(); json.bool(true); json.endArray()
            json.key("b"); json.beginObject(); json.key("c"); json.string("d"); json.dynamicKey("e\"f"); json.number(1.5); json.endObject()
            json.key("g"); json.bool(false)
            json.endObject()
        }
        #expect(written == #"{"a":[{},[],true],"b":{"c":"d","e\"f":1.5},"g":false}"#)
        #expect(try JSONSerialization.jsonObject(with: Data(written.utf8)) is [String: Any])
    }

    @Test func escapesWhatJSONRequires() throws {
        let value = "q\"\\\n\r\t\u{01}é😀"
        let written = text { $0.string(value) }
        #expect(written == #""q\"\\\n\r\t\u0001é😀""#)
        let decoded = try JSONSerialization.jsonObject(with: Data("[\(written)]".utf8)) as? [String]
        #expect(decoded == [value])
    }

    @Test func writesParametersInKeyOrder() {
        let few: [String: InferParameter] = ["tern.variant": .string("b"), "tern.experiment": .string("x"), "a": .int64(-3), "flag": .bool(true)]
        #expect(text { InferHTTPCodec.writeParameters(few, into: &$0) } == #"{"a":-3,"flag":true,"tern.experiment":"x","tern.variant":"b"}"#)
        var many: [String: InferParameter] = [:]
        for n in (0..<12).reversed() { many["k\(String(format: "%02d", n))"] = .uint64(UInt64(n)) }
        let expected = "{" + (0..<12).map { "\"k\(String(format: "%02d", $0))\":\($0)" }.joined(separator: ",") + "}"
        #expect(text { InferHTTPCodec.writeParameters(many, into: &$0) } == expected)
        #expect(text { InferHTTPCodec.writeParameters([:], into: &$0) } == "{}")
        for pair: [String: InferParameter] in [["tern.variant": .string("b"), "tern.experiment": .string("x")], ["z": .double(0.5), "y": .int64(1)]] {
            let expected = "{" + pair.keys.sorted().map { key in
                switch pair[key]! {
                case .string(let v): "\"\(key)\":\"\(v)\""
                case .double(let v): "\"\(key)\":\(v)"
                case .int64(let v): "\"\(key)\":\(v)"
                default: ""
                }
            }.joined(separator: ",") + "}"
            #expect(text { InferHTTPCodec.writeParameters(pair, into: &$0) } == expected)
        }
    }
}
