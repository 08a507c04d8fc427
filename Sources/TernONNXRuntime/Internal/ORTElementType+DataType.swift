import TernCore

extension ORTElementType {
    init?(_ dataType: DataType) {
        switch dataType {
        case .bool: self = .bool
        case .uint8: self = .uint8
        case .uint16: self = .uint16
        case .uint32: self = .uint32
        case .uint64: self = .uint64
        case .int8: self = .int8
        case .int16: self = .int16
        case .int32: self = .int32
        case .int64: self = .int64
        case .fp16: self = .float16
        case .fp32: self = .float
        case .fp64: self = .double
        case .bf16: self = .bfloat16
        case .bytes: self = .string
        }
    }

    /// The Tern type, or nil for types Triton's onnxruntime backend does not serve (complex).
    var dataType: DataType? {
        switch self {
        case .bool: .bool
        case .uint8: .uint8
        case .uint16: .uint16
        case .uint32: .uint32
        case .uint64: .uint64
        case .int8: .int8
        case .int16: .int16
        case .int32: .int32
        case .int64: .int64
        case .float16: .fp16
        case .float: .fp32
        case .double: .fp64
        case .bfloat16: .bf16
        case .string: .bytes
        case .undefined, .complex64, .complex128: nil
        }
    }
}
