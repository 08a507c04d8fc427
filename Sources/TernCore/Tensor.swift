import Foundation

/// A named tensor: element type, shape and the elements as contiguous little-endian bytes.
///
/// BYTES tensors hold their elements in the KServe binary layout (a 4-byte little-endian length
/// before each element), so every frontend and backend shares one representation. `data` may view
/// memory owned by a frontend's request buffer or by a backend's output value: no copy is made when
/// a tensor moves between layers.
public struct Tensor: Sendable {
    /// The input or output name the tensor is bound to.
    public var name: String
    /// The element type, which decides how `data` is laid out.
    public var dataType: DataType
    /// Dimensions, outermost first (empty for a scalar).
    public var shape: [Int64]
    /// The elements as little-endian bytes in row-major order (the KServe length-prefixed layout for BYTES).
    public var data: Data

    /// Makes a tensor from its name, element type, shape and raw bytes, without checking that they agree.
    public init(name: String, dataType: DataType, shape: [Int64], data: Data) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
        self.data = data
    }

    /// Number of elements the shape describes (1 for a scalar).
    public var elementCount: Int { Tensor.elementCount(of: shape) }

    /// Number of elements of `shape`; negative dimensions count as zero. A count that does not
    /// fit an `Int` saturates at `Int.max` (no shape from the wire can trap here); code that
    /// allocates or compares sizes uses `checkedElementCount` or `byteCount`.
    public static func elementCount(of shape: [Int64]) -> Int {
        checkedElementCount(of: shape) ?? Int.max
    }

    /// Number of elements of `shape` (negative dimensions count as zero), nil when it overflows.
    public static func checkedElementCount(of shape: [Int64]) -> Int? {
        var count = 1
        for dim in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(max(dim, 0)))
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Bytes that `shape` of a fixed-size `type` occupies; nil for BYTES or when it overflows.
    public static func byteCount(of shape: [Int64], type: DataType) -> Int? {
        guard let size = type.elementSize, let count = checkedElementCount(of: shape) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        return overflow ? nil : bytes
    }

    /// Checks a shape a request declares before anything is read or allocated for it: its element
    /// and byte counts must fit an `Int`, and its bytes (four per element at least for BYTES) must
    /// not exceed `limit` (the largest request the server takes, for data sent in the request).
    public static func checkDeclared(shape: [Int64], type: DataType, name: String, limit: Int = .max) throws(TernError) {
        guard let count = checkedElementCount(of: shape), type == .bytes || byteCount(of: shape, type: type) != nil else {
            throw .invalidArgument("input '\(name)': shape \(shape) of \(type.protocolName) is larger than any tensor can be")
        }
        let least: (partialValue: Int, overflow: Bool) = type == .bytes ? count.multipliedReportingOverflow(by: 4) : (byteCount(of: shape, type: type)!, false)
        if least.overflow || least.partialValue > limit {
            throw .invalidArgument(
                "input '\(name)': shape \(shape) of \(type.protocolName) needs \(least.overflow ? "more" : "\(least.partialValue)") bytes, more than the largest request this server takes (\(limit) bytes, --max-request-size)")
        }
    }

    /// Checks that `data` holds exactly the elements the shape describes.
    public func validateByteSize() throws(TernError) {
        guard let count = Tensor.checkedElementCount(of: shape) else {
            throw .invalidArgument("input '\(name)': shape \(shape) holds more elements than a tensor can have")
        }
        if let size = dataType.elementSize {
            guard let expected = Tensor.byteCount(of: shape, type: dataType) else {
                throw .invalidArgument(
                    "input '\(name)': shape \(shape) of \(dataType.protocolName) needs more bytes than a tensor can have (\(size) bytes × \(count) elements)")
            }
            guard data.count == expected else {
                throw .invalidArgument(
                    "input '\(name)': tensor data has \(data.count) bytes but shape \(shape) of \(dataType.protocolName) needs \(expected)")
            }
        } else {
            let found = try BytesCodec.count(in: data, name: name)
            guard found == count else {
                throw .invalidArgument(
                    "input '\(name)': tensor data holds \(found) BYTES elements but shape \(shape) needs \(count)")
            }
        }
    }
}

/// A Swift type that can be an element of a numeric tensor.
public protocol TensorScalar: Sendable {
    static var dataType: DataType { get }
}

extension Bool: TensorScalar { public static var dataType: DataType { .bool } }
extension UInt8: TensorScalar { public static var dataType: DataType { .uint8 } }
extension UInt16: TensorScalar { public static var dataType: DataType { .uint16 } }
extension UInt32: TensorScalar { public static var dataType: DataType { .uint32 } }
extension UInt64: TensorScalar { public static var dataType: DataType { .uint64 } }
extension Int8: TensorScalar { public static var dataType: DataType { .int8 } }
extension Int16: TensorScalar { public static var dataType: DataType { .int16 } }
extension Int32: TensorScalar { public static var dataType: DataType { .int32 } }
extension Int64: TensorScalar { public static var dataType: DataType { .int64 } }
extension Float: TensorScalar { public static var dataType: DataType { .fp32 } }
extension Double: TensorScalar { public static var dataType: DataType { .fp64 } }
#if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
extension Float16: TensorScalar { public static var dataType: DataType { .fp16 } }
#endif

extension Tensor {
    /// A numeric tensor from Swift values (copied once into the tensor's storage).
    public init<T: TensorScalar>(name: String, shape: [Int64], values: [T]) {
        self.init(
            name: name, dataType: T.dataType, shape: shape,
            data: values.withUnsafeBytes { Data($0) })
    }

    /// A BYTES tensor from its elements.
    public init(name: String, shape: [Int64], strings: [Data]) {
        self.init(name: name, dataType: .bytes, shape: shape, data: BytesCodec.encode(strings))
    }

    /// The elements as Swift values; the type must match `dataType`.
    public func values<T: TensorScalar>(as type: T.Type = T.self) throws(TernError) -> [T] {
        guard T.dataType == dataType else {
            throw .invalidArgument("tensor '\(name)' is \(dataType.protocolName), not \(T.dataType.protocolName)")
        }
        let count = data.count / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            _ = data.withUnsafeBytes { raw in
                memcpy(buffer.baseAddress!, raw.baseAddress!, count * MemoryLayout<T>.stride)
            }
            initialized = count
        }
    }

    /// The elements of a BYTES tensor.
    public func strings() throws(TernError) -> [Data] {
        guard dataType == .bytes else {
            throw .invalidArgument("tensor '\(name)' is \(dataType.protocolName), not BYTES")
        }
        return try BytesCodec.decode(data, name: name)
    }
}
