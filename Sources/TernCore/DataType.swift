/// Element type of a tensor. Names follow the KServe v2 protocol ("FP32", "BYTES", ...); config.pbtxt
/// spells the same types as `TYPE_FP32`, `TYPE_STRING`, ...
public enum DataType: String, Sendable, Hashable, CaseIterable {
    case bool = "BOOL"
    case uint8 = "UINT8"
    case uint16 = "UINT16"
    case uint32 = "UINT32"
    case uint64 = "UINT64"
    case int8 = "INT8"
    case int16 = "INT16"
    case int32 = "INT32"
    case int64 = "INT64"
    case fp16 = "FP16"
    case fp32 = "FP32"
    case fp64 = "FP64"
    case bf16 = "BF16"
    /// Variable-length byte strings; on the wire each element is a 4-byte little-endian length
    /// followed by its bytes.
    case bytes = "BYTES"

    /// Parses a protocol name such as "FP32"; nil for names the protocol does not define.
    public init?(protocolName: String) { self.init(rawValue: protocolName) }

    /// The protocol name, e.g. "FP32".
    public var protocolName: String { rawValue }

    /// Size of one element in bytes; nil for BYTES, whose elements vary in size.
    public var elementSize: Int? {
        switch self {
        case .bool, .uint8, .int8: 1
        case .uint16, .int16, .fp16, .bf16: 2
        case .uint32, .int32, .fp32: 4
        case .uint64, .int64, .fp64: 8
        case .bytes: nil
        }
    }

    /// The config.pbtxt type, e.g. `TYPE_FP32`.
    public var configType: Inference_DataType {
        switch self {
        case .bool: .typeBool
        case .uint8: .typeUint8
        case .uint16: .typeUint16
        case .uint32: .typeUint32
        case .uint64: .typeUint64
        case .int8: .typeInt8
        case .int16: .typeInt16
        case .int32: .typeInt32
        case .int64: .typeInt64
        case .fp16: .typeFp16
        case .fp32: .typeFp32
        case .fp64: .typeFp64
        case .bf16: .typeBf16
        case .bytes: .typeString
        }
    }

    /// The type a config.pbtxt names; nil for `TYPE_INVALID` and unknown values.
    public init?(configType: Inference_DataType) {
        switch configType {
        case .typeBool: self = .bool
        case .typeUint8: self = .uint8
        case .typeUint16: self = .uint16
        case .typeUint32: self = .uint32
        case .typeUint64: self = .uint64
        case .typeInt8: self = .int8
        case .typeInt16: self = .int16
        case .typeInt32: self = .int32
        case .typeInt64: self = .int64
        case .typeFp16: self = .fp16
        case .typeFp32: self = .fp32
        case .typeFp64: self = .fp64
        case .typeBf16: self = .bf16
        case .typeString: self = .bytes
        default: return nil
        }
    }
}
