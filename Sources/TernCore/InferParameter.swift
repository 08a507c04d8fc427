/// A request, tensor or response parameter as KServe v2 carries it (`parameters` maps).
public enum InferParameter: Sendable, Hashable {
    case bool(Bool)
    case int64(Int64)
    case uint64(UInt64)
    case double(Double)
    case string(String)

    /// The value as an integer when it is one (an integral double counts, as JSON has no ints).
    public var integerValue: Int64? {
        switch self {
        case .int64(let v): v
        case .uint64(let v): Int64(exactly: v)
        case .double(let v): Int64(exactly: v)
        case .bool, .string: nil
        }
    }

    /// The value when it is a bool, nil for every other kind.
    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The value as it would read in JSON, for error messages (strings quoted).
    public var jsonText: String {
        switch self {
        case .bool(let v): "\(v)"
        case .int64(let v): "\(v)"
        case .uint64(let v): "\(v)"
        case .double(let v): v.isFinite ? "\(v)" : "a non-finite number"
        case .string(let v): "\"\(v.count > 64 ? String(v.prefix(64)) + "…" : v)\""
        }
    }

    /// The value when it is a string, nil for every other kind (numbers are not converted).
    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }
}
