import Foundation
import TernCore
import TernTraining

/// A per-round value written in the coordinator's YAML, e.g. `5 if round < 10 else 3` or
/// `0.001 * 0.95 ^ round`: numbers, the variable `round`, `+ - * /`, `^` or `**` (power), `%`,
/// parentheses, comparisons (`< <= > >= == !=`), `and`/`or`/`not`, and `A if COND else B`.
/// Integer arithmetic stays integer (so `local_epochs` reaches Python as an `int`); `/` and a
/// fractional power give floats; a comparison gives a bool.
public struct RoundExpression: Sendable, Equatable, CustomStringConvertible {
    /// The source text.
    public let text: String
    private let root: Node

    /// Parses `text`, throwing INVALID_ARGUMENT with the position of the first error.
    public init(_ text: String) throws(TernError) {
        var parser = Parser(tokens: try Lexer.tokens(text), text: text)
        self.root = try parser.parseExpression()
        guard parser.atEnd else { throw parser.error("unexpected \(parser.peekDescription)") }
        self.text = text
    }

    /// Whether the text mentions `round` (a constant string such as `"sgd"` is not an expression).
    public var usesRound: Bool { root.usesRound }

    /// The value for round `round` (counted from 1, as Flower counts).
    public func value(round: Int) throws(TernError) -> FLScalar {
        switch try root.evaluate(round: round) {
        case .int(let value): return .int(value)
        case .double(let value): return .double(value)
        case .bool(let value): return .bool(value)
        }
    }

    /// The source text.
    public var description: String { text }
}

private enum Value: Equatable, Sendable {
    case int(Int64), double(Double), bool(Bool)

    var double: Double {
        switch self {
        case .int(let v): return Double(v)
        case .double(let v): return v
        case .bool(let v): return v ? 1 : 0
        }
    }

    var truth: Bool {
        switch self {
        case .bool(let v): return v
        case .int(let v): return v != 0
        case .double(let v): return v != 0
        }
    }
}

private indirect enum Node: Equatable, Sendable {
    case number(Value)
    case round
    case unary(String, Node)
    case binary(String, Node, Node)
    case conditional(then: Node, condition: Node, otherwise: Node)

    var usesRound: Bool {
        switch self {
        case .number: return false
        case .round: return true
        case .unary(_, let a): return a.usesRound
        case .binary(_, let a, let b): return a.usesRound || b.usesRound
        case .conditional(let a, let c, let b): return a.usesRound || c.usesRound || b.usesRound
        }
    }

    func evaluate(round: Int) throws(TernError) -> Value {
        switch self {
        case .number(let value): return value
        case .round: return .int(Int64(round))
        case .unary(let op, let a):
            let value = try a.evaluate(round: round)
            if op == "not" { return .bool(!value.truth) }
            if case .int(let v) = value { return .int(0 &- v) }
            return .double(-value.double)
        case .conditional(let a, let condition, let b):
            return try condition.evaluate(round: round).truth ? a.evaluate(round: round) : b.evaluate(round: round)
        case .binary(let op, let a, let b):
            let x = try a.evaluate(round: round)
            if op == "and" { return x.truth ? .bool(try b.evaluate(round: round).truth) : .bool(false) }
            if op == "or" { return x.truth ? .bool(true) : .bool(try b.evaluate(round: round).truth) }
            return try Node.apply(op, x, try b.evaluate(round: round))
        }
    }

    private static func apply(_ op: String, _ x: Value, _ y: Value) throws(TernError) -> Value {
        switch op {
        case "<": return .bool(x.double < y.double)
        case "<=": return .bool(x.double <= y.double)
        case ">": return .bool(x.double > y.double)
        case ">=": return .bool(x.double >= y.double)
        case "==": return .bool(x.double == y.double)
        case "!=": return .bool(x.double != y.double)
        default: break
        }
        if case .int(let a) = x, case .int(let b) = y {
            switch op {
            case "+": return .int(a &+ b)
            case "-": return .int(a &- b)
            case "*": return .int(a &* b)
            case "%":
                guard b != 0 else { throw .invalidArgument("modulo by zero") }
                let (remainder, overflow) = a.remainderReportingOverflow(dividingBy: b)
                if overflow { return .int(0) }  // Int64.min % -1
                // Python's sign: the result takes the divisor's sign.
                return .int(remainder != 0 && (remainder < 0) != (b < 0) ? remainder &+ b : remainder)
            case "^" where b >= 0 && b < 63:
                var result: Int64 = 1
                for _ in 0..<b { result = result &* a }
                return .int(result)
            default: break
            }
        }
        let a = x.double, b = y.double
        switch op {
        case "+": return .double(a + b)
        case "-": return .double(a - b)
        case "*": return .double(a * b)
        case "/":
            guard b != 0 else { throw .invalidArgument("division by zero") }
            return .double(a / b)
        case "%":
            guard b != 0 else { throw .invalidArgument("modulo by zero") }
            return .double(a - (a / b).rounded(.down) * b)
        default: return .double(Foundation.pow(a, b))
        }
    }
}

private enum Token: Equatable {
    case number(Value), word(String), symbol(String)
}

private enum Lexer {
    static func tokens(_ text: String) throws(TernError) -> [(Token, Int)] {
        var out: [(Token, Int)] = []
        let chars = Array(text)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" { i += 1; continue }
            if c.isNumber || (c == "." && i + 1 < chars.count && chars[i + 1].isNumber) {
                let start = i
                var isFloat = false
                while i < chars.count, chars[i].isNumber || chars[i] == "." || chars[i] == "_" {
                    if chars[i] == "." { isFloat = true }
                    i += 1
                }
                if i < chars.count, chars[i] == "e" || chars[i] == "E" {
                    isFloat = true
                    i += 1
                    if i < chars.count, chars[i] == "+" || chars[i] == "-" { i += 1 }
                    while i < chars.count, chars[i].isNumber { i += 1 }
                }
                let literal = String(chars[start..<i]).replacingOccurrences(of: "_", with: "")
                if !isFloat, let value = Int64(literal) {
                    out.append((.number(.int(value)), start))
                } else if let value = Double(literal) {
                    out.append((.number(.double(value)), start))
                } else {
                    throw .invalidArgument("'\(literal)' at \(start + 1) in \"\(text)\" is not a number")
                }
                continue
            }
            if c.isLetter || c == "_" {
                let start = i
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" { i += 1 }
                out.append((.word(String(chars[start..<i])), start))
                continue
            }
            let two = i + 1 < chars.count ? String(chars[i...(i + 1)]) : ""
            if ["<=", ">=", "==", "!=", "**"].contains(two) {
                out.append((.symbol(two == "**" ? "^" : two), i))
                i += 2
                continue
            }
            if "+-*/%^()<>".contains(c) {
                out.append((.symbol(String(c)), i))
                i += 1
                continue
            }
            throw .invalidArgument("unexpected '\(c)' at \(i + 1) in \"\(text)\"")
        }
        return out
    }
}

private struct Parser {
    let tokens: [(Token, Int)]
    let text: String
    var position = 0

    init(tokens: [(Token, Int)], text: String) {
        self.tokens = tokens
        self.text = text
    }

    var atEnd: Bool { position >= tokens.count }
    var peek: Token? { atEnd ? nil : tokens[position].0 }
    var peekDescription: String {
        switch peek {
        case .number(let v)?: return "number \(v.double)"
        case .word(let w)?: return "'\(w)'"
        case .symbol(let s)?: return "'\(s)'"
        case nil: return "end"
        }
    }

    func error(_ message: String) -> TernError {
        let at = atEnd ? text.count : tokens[position].1
        return .invalidArgument("\(message) at \(at + 1) in \"\(text)\"")
    }

    mutating func take(_ token: Token) -> Bool {
        guard peek == token else { return false }
        position += 1
        return true
    }

    // conditional := or ('if' or 'else' conditional)?
    mutating func parseExpression() throws(TernError) -> Node {
        let value = try parseBinary(level: 0)
        guard take(.word("if")) else { return value }
        let condition = try parseBinary(level: 0)
        guard take(.word("else")) else { throw error("expected 'else'") }
        return .conditional(then: value, condition: condition, otherwise: try parseExpression())
    }

    private static let levels: [[Token]] = [
        [.word("or")], [.word("and")],
        [.symbol("<"), .symbol("<="), .symbol(">"), .symbol(">="), .symbol("=="), .symbol("!=")],
        [.symbol("+"), .symbol("-")], [.symbol("*"), .symbol("/"), .symbol("%")],
    ]

    mutating func parseBinary(level: Int) throws(TernError) -> Node {
        guard level < Parser.levels.count else { return try parseUnary() }
        var left = try parseBinary(level: level + 1)
        while let token = peek, Parser.levels[level].contains(token) {
            position += 1
            let right = try parseBinary(level: level + 1)
            switch token {
            case .symbol(let op), .word(let op): left = .binary(op, left, right)
            case .number: break
            }
        }
        return left
    }

    mutating func parseUnary() throws(TernError) -> Node {
        if take(.word("not")) { return .unary("not", try parseUnary()) }
        if take(.symbol("-")) { return .unary("-", try parseUnary()) }
        if take(.symbol("+")) { return try parseUnary() }
        return try parsePower()
    }

    // power := atom ('^' unary)?   (right-associative, binds tighter than unary minus on its left)
    mutating func parsePower() throws(TernError) -> Node {
        let base = try parseAtom()
        guard take(.symbol("^")) else { return base }
        return .binary("^", base, try parseUnary())
    }

    mutating func parseAtom() throws(TernError) -> Node {
        guard let token = peek else { throw error("expected a value") }
        position += 1
        switch token {
        case .number(let value): return .number(value)
        case .word("round"), .word("server_round"): return .round
        case .word("True"), .word("true"): return .number(.bool(true))
        case .word("False"), .word("false"): return .number(.bool(false))
        case .symbol("("):
            let inner = try parseExpression()
            guard take(.symbol(")")) else { throw error("expected ')'") }
            return inner
        default:
            position -= 1
            throw error("unexpected \(peekDescription)")
        }
    }
}
