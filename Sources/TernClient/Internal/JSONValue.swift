import Foundation
import TernCore

/// A parsed JSON value. The KServe REST API carries tensors as JSON arrays of up to millions of
/// numbers; Foundation's JSONSerialization boxes each one in an NSNumber (hundreds of milliseconds
/// for one 224×224 image), so requests are parsed by `JSONParser` into this unboxed form instead.
package enum JSONValue {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    package subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    package var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    package var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    package var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    package var objectValue: JSONObject? { if case .object(let o) = self { return o }; return nil }
    package var numberValue: JSONNumber? { if case .number(let n) = self { return n }; return nil }

    /// Appends the leaves of nested arrays in row-major order.
    package func flatten(into out: inout [JSONValue]) {
        if case .array(let items) = self {
            for item in items { item.flatten(into: &out) }
        } else {
            out.append(self)
        }
    }

    /// Converts what JSONSerialization produced (for the CLI's input files).
    package init(foundation value: Any) {
        switch value {
        case let string as String: self = .string(string)
        case let array as [Any]: self = .array(array.map(JSONValue.init(foundation:)))
        case let object as [String: Any]: self = .object(JSONObject(object.map { ($0.key, JSONValue(foundation: $0.value)) }))
        case let number as NSNumber:
            if JSONTensorCodec.isBool(number) {
                self = .bool(number.boolValue)
            } else {
                let double = number.doubleValue
                let integral = double.rounded() == double && String(cString: number.objCType) != "d"
                self = .number(JSONNumber(double: double, int: integral ? number.int64Value : nil, uint: integral && double >= 0 ? number.uint64Value : nil))
            }
        default: self = .null
        }
    }

    package var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): String(b)
        case .number(let n): n.description
        case .string(let s): "\"\(s)\""
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// The members of a JSON object in document order. Request objects have a handful of members:
/// a linear search is cheaper than hashing every key into a dictionary. A repeated name resolves
/// to its last value, as with a dictionary.
package struct JSONObject: Sequence, ExpressibleByDictionaryLiteral {
    private(set) var members: [(String, JSONValue)]

    package init(_ members: [(String, JSONValue)] = []) { self.members = members }
    package init(dictionaryLiteral elements: (String, JSONValue)...) { members = elements }

    package subscript(key: String) -> JSONValue? {
        for (name, value) in members.reversed() where name == key { return value }
        return nil
    }

    package mutating func append(_ key: String, _ value: JSONValue) { members.append((key, value)) }

    /// Each name once (its last value), in document order.
    package func makeIterator() -> some IteratorProtocol<(key: String, value: JSONValue)> {
        var seen = Set<String>()
        let unique = members.reversed().filter { seen.insert($0.0).inserted }.reversed().map { (key: $0.0, value: $0.1) }
        return unique.makeIterator()
    }
}

/// A JSON number, with its exact integer value when the literal was an integer.
package struct JSONNumber {
    package var double: Double
    /// Set for integer literals that fit Int64.
    package var int: Int64?
    /// Set for integer literals that fit UInt64.
    package var uint: UInt64?

    package var description: String { int.map(String.init) ?? uint.map(String.init) ?? String(double) }
}

/// A strict RFC 8259 parser over raw bytes.
package struct JSONParser {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private var depth = 0

    package static func parse(_ bytes: UnsafeRawBufferPointer) throws(TernError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    package static func parse(_ data: Data) throws(TernError) -> JSONValue {
        var result: Result<JSONValue, TernError> = .success(.null)
        data.withUnsafeBytes { raw in result = Result { () throws(TernError) in try parse(raw) } }
        return try result.get()
    }

    private init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private func error(_ message: String) -> TernError {
        .invalidArgument("malformed JSON at byte \(index): \(message)")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(TernError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        default: return .number(try parseNumber())
        }
    }

    private mutating func expect(_ word: StaticString) throws(TernError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
            throw error("unexpected character")
        }
        index += count
    }

    private mutating func parseObject() throws(TernError) -> JSONValue {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw error("nesting too deep") }
        index += 1
        var members = JSONObject()
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
            index += 1
            skipWhitespace()
            members.append(key, try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws(TernError) -> JSONValue {
        depth += 1
        defer { depth -= 1 }
        guard depth < 512 else { throw error("nesting too deep") }
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws(TernError) -> JSONNumber {
        let start = index
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        let digitsStart = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                index += 1
            } else if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E")
                || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-")
            {
                isInteger = false
                index += 1
            } else {
                break
            }
        }
        guard index > digitsStart else { throw error("unexpected character") }
        let negative = digitsStart > start
        if isInteger {
            var magnitude: UInt64 = 0
            var overflow = false
            for offset in digitsStart..<index {
                let (times, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (plus, o2) = times.addingReportingOverflow(UInt64(bytes[offset] - UInt8(ascii: "0")))
                overflow = overflow || o1 || o2
                magnitude = plus
            }
            if !overflow {
                if negative {
                    let value: Int64? = magnitude <= UInt64(Int64.max) ? -Int64(magnitude) : (magnitude == UInt64(Int64.max) + 1 ? Int64.min : nil)
                    return JSONNumber(double: -Double(magnitude), int: value, uint: nil)
                }
                return JSONNumber(double: Double(magnitude), int: Int64(exactly: magnitude), uint: magnitude)
            }
        }
        // Fractions, exponents and huge integers: let strtod do the exact rounding.
        let length = index - start
        guard length < 128 else { throw error("number too long") }
        let value = withUnsafeTemporaryAllocation(of: CChar.self, capacity: length + 1) { buffer in
            for offset in 0..<length { buffer[offset] = CChar(bitPattern: bytes[start + offset]) }
            buffer[length] = 0
            var end: UnsafeMutablePointer<CChar>? = nil
            let parsed = strtod(buffer.baseAddress!, &end)
            return (parsed, end.map { $0 - buffer.baseAddress! } ?? 0)
        }
        guard value.1 == length else { throw error("malformed number") }
        return JSONNumber(double: value.0, int: nil, uint: nil)
    }

    private mutating func parseString() throws(TernError) -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let string = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return string
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            index += 1
        }
        var out = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw error("unexpected end") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                    out.append(contentsOf: Array(String(Character(unicode)).utf8))
                default: throw error("invalid escape")
                }
            case 0..<0x20:
                throw error("control character in a string")
            default:
                out.append(byte)
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseHex4() throws(TernError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("unexpected end") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            index += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
