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

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }
}
