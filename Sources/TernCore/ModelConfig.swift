import Foundation
import SwiftProtobuf

/// A model's configuration: the message generated from `Protos/model_config.proto`, whose field
/// names and numbers are Triton's, so every config.pbtxt written for Triton decodes here.
public typealias ModelConfig = Inference_ModelConfig

extension ModelConfig {
    /// Reads config.pbtxt text. Fields Tern does not know are skipped (a config written for a newer
    /// Triton still loads); malformed text, unknown enum names and bad numbers are reported with the
    /// file, line and field path, which swift-protobuf's own errors lack.
    public static func parse(text: String, file: String = "config.pbtxt") throws(TernError) -> ModelConfig {
        do {
            return try decode(text)
        } catch {
            let located = ConfigErrorLocator.locate(text: text) { try decode($0) }
            var message = "\(file): cannot parse config: \(describe(error))"
            if let located {
                let path = located.fieldPath.isEmpty ? "" : " (in \(located.fieldPath))"
                message = "\(file):\(located.line): \(describe(located.error))\(path): \(located.lineText)"
            }
            throw .invalidArgument(message)
        }
    }

    /// Reads a config given as JSON (the `config` parameter of a repository load request), with the
    /// protobuf JSON mapping Triton uses.
    public static func parse(json: String, source: String = "load request") throws(TernError) -> ModelConfig {
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        do {
            return try ModelConfig(jsonString: json, options: options)
        } catch {
            throw .invalidArgument("\(source): cannot parse config JSON: \(describe(error))")
        }
    }

    /// The config as protobuf text format, as a config.pbtxt would hold it.
    public var pbtxt: String { textFormatString() }

    private static func decode(_ text: String) throws -> ModelConfig {
        var options = TextFormatDecodingOptions()
        options.ignoreUnknownFields = true
        return try ModelConfig(textFormatString: text, options: options)
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? JSONDecodingError {
            switch error {
            case .malformedNumber: return "a number is malformed or out of range for its field (dims are int64, max_batch_size and counts int32)"
            case .malformedString: return "a string is malformed"
            case .malformedBool: return "a bool is malformed (use true or false)"
            case .unrecognizedEnumValue: return "unknown enum value (e.g. data_type takes TYPE_FP32, kind takes KIND_CPU)"
            case .unquotedMapKey: return "a map key is not a quoted string"
            case .truncated: return "the JSON ends too early (an unclosed object or array?)"
            case .trailingGarbage: return "unexpected text after the end of the JSON object"
            case .invalidUTF8: return "invalid UTF-8"
            case .schemaMismatch: return "a value of the wrong kind for its field (an object where a list is expected, or the reverse)"
            case .conflictingOneOf: return "two fields that exclude each other are both set"
            case .messageDepthLimit: return "nesting too deep"
            case .failure: return "not valid JSON"
            default: return "\(error)"
            }
        }
        guard let error = error as? TextFormatDecodingError else { return "\(error)" }
        switch error {
        case .malformedText: return "malformed text"
        case .malformedNumber: return "malformed or out-of-range number"
        case .unrecognizedEnumValue: return "unknown enum value"
        case .unknownField: return "unknown field"
        case .trailingGarbage: return "unexpected text after the end"
        case .truncated: return "text ends too early (an unclosed block?)"
        case .invalidUTF8: return "invalid UTF-8"
        case .schemaMismatch: return "value of the wrong kind for this field"
        case .conflictingOneOf: return "two fields that exclude each other are both set"
        case .messageDepthLimit: return "nesting too deep"
        default: return "\(error)"
        }
    }
}

/// Finds the first line of a text-format document at which decoding starts to fail, by decoding
/// growing prefixes with their open blocks closed. Heuristic, but it names the right line for the
/// errors people make by hand (a misspelt enum, a stray character, a bad number).
enum ConfigErrorLocator {
    struct Location {
        var line: Int
        var lineText: String
        var fieldPath: String
        var error: any Error
    }

    static func locate(text: String, decode: (String) throws -> Any) -> Location? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var prefix = ""
        var scanner = Scanner()
        for (index, line) in lines.enumerated() {
            prefix += line + "\n"
            scanner.feed(line)
            let closed = closeOpenBlocks(prefix, scanner: scanner)
            do {
                _ = try decode(closed)
            } catch {
                if scanner.endsMidValue { continue }
                return Location(
                    line: index + 1, lineText: line.trimmingCharacters(in: .whitespaces),
                    fieldPath: scanner.linePath.joined(separator: "."), error: error)
            }
        }
        return nil
    }

    private static func closeOpenBlocks(_ prefix: String, scanner: Scanner) -> String {
        var text = prefix
        if scanner.openers.last == "[" {
            while let last = text.last, last == "\n" || last == " " || last == "," { text.removeLast() }
        }
        for opener in scanner.openers.reversed() { text += opener == "[" ? "]" : "}" }
        return text
    }

    /// Tracks open `{`/`[`/`<` and the field names that opened them, skipping strings and comments.
    struct Scanner {
        var openers: [Character] = []
        /// Field names of the open blocks (`input [ { ...` is one entry, "input").
        var path: [String] = []
        /// The deepest `path` seen on the last line fed.
        var linePath: [String] = []
        var endsMidValue = false
        private var pushed: [Bool] = []
        private var lastIdentifier = ""

        mutating func feed(_ line: String) {
            var identifier = ""
            var inString: Character?
            var escaped = false
            var lastSignificant: Character = "\n"
            linePath = path
            for ch in line {
                if let quote = inString {
                    if escaped { escaped = false } else if ch == "\\" { escaped = true } else if ch == quote { inString = nil }
                    continue
                }
                if ch == "#" { break }
                if ch == "\"" || ch == "'" { inString = ch; continue }
                if ch.isLetter || ch.isNumber || ch == "_" || ch == "." || ch == "-" {
                    identifier.append(ch)
                } else {
                    if !identifier.isEmpty { lastIdentifier = identifier; identifier = "" }
                    switch ch {
                    case "{", "<", "[":
                        // An element block directly inside a list belongs to the list's field.
                        let push = !(ch != "[" && openers.last == "[")
                        if push { path.append(lastIdentifier) }
                        pushed.append(push)
                        openers.append(ch == "[" ? "[" : "{")
                        if path.count > linePath.count { linePath = path }
                    case "}", ">", "]":
                        if openers.popLast() != nil, pushed.popLast() == true { path.removeLast() }
                    default: break
                    }
                }
                if !ch.isWhitespace { lastSignificant = ch }
            }
            if !identifier.isEmpty { lastIdentifier = identifier; lastSignificant = "a" }
            endsMidValue = lastSignificant == ":" || inString != nil
        }
    }
}
