import Foundation
import TernTraining

/// A value of Flower's `Scalar` (config, properties and metrics maps): one of double, sint64,
/// uint64, bool, string and bytes. Python ints arrive as `sint64`.
public enum FLScalar: Sendable, Hashable, CustomStringConvertible {
    /// A float (Python `float`).
    case double(Double)
    /// A signed integer (Python `int`).
    case int(Int64)
    /// An unsigned integer.
    case uint(UInt64)
    /// A boolean.
    case bool(Bool)
    /// A string.
    case string(String)
    /// Bytes.
    case bytes(Data)

    /// The value as a number when it is one (booleans are 0 or 1).
    public var number: Double? {
        switch self {
        case .double(let value): return value
        case .int(let value): return Double(value)
        case .uint(let value): return Double(value)
        case .bool(let value): return value ? 1 : 0
        case .string, .bytes: return nil
        }
    }

    /// The value as text, as Python's `str()` would print it.
    public var description: String {
        switch self {
        case .double(let value): return "\(value)"
        case .int(let value): return "\(value)"
        case .uint(let value): return "\(value)"
        case .bool(let value): return value ? "True" : "False"
        case .string(let value): return value
        case .bytes(let value): return "<\(value.count) bytes>"
        }
    }
}

extension FLScalar {
    init(_ proto: Flwr_Proto_Scalar) {
        switch proto.scalar {
        case .double(let value): self = .double(value)
        case .sint64(let value): self = .int(value)
        case .uint64(let value): self = .uint(value)
        case .bool(let value): self = .bool(value)
        case .string(let value): self = .string(value)
        case .bytes(let value): self = .bytes(value)
        case nil: self = .int(0)
        }
    }

    var proto: Flwr_Proto_Scalar {
        var scalar = Flwr_Proto_Scalar()
        switch self {
        case .double(let value): scalar.double = value
        case .int(let value): scalar.sint64 = value
        case .uint(let value): scalar.uint64 = value
        case .bool(let value): scalar.bool = value
        case .string(let value): scalar.string = value
        case .bytes(let value): scalar.bytes = value
        }
        return scalar
    }

    static func map(_ proto: [String: Flwr_Proto_Scalar]) -> [String: FLScalar] {
        proto.mapValues { FLScalar($0) }
    }

    static func proto(_ map: [String: FLScalar]) -> [String: Flwr_Proto_Scalar] {
        map.mapValues { $0.proto }
    }
}
