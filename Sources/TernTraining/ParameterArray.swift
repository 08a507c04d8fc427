import Foundation
import TernCore

/// One array of a model's parameters (a weight matrix, a bias): its element type, shape and values.
/// Arithmetic runs in `Double`; `npy()` and `tensor(name:)` give the values back in the array's own
/// element type, so a float32 model stays float32. Flower moves each as a whole `.npy` file.
public struct ParameterArray: Sendable, Equatable {
    /// The element type the array travels in (float32 for most models; NumPy's default is float64).
    public var dataType: DataType
    /// The array's dimensions, C order.
    public var shape: [Int]
    /// The elements in C order.
    public var values: [Double]

    /// An array of `values` with this shape and element type; the count must match the shape.
    public init(dataType: DataType = .fp32, shape: [Int], values: [Double]) {
        precondition(shape.reduce(1, *) == values.count, "ParameterArray: \(values.count) values do not fill shape \(shape)")
        self.dataType = dataType
        self.shape = shape
        self.values = values
    }

    /// The number of elements.
    public var count: Int { values.count }

    /// Decodes one of `Parameters.tensors` (a `.npy` file); `index` names it in errors.
    public init(npy data: Data, index: Int) throws(TernError) {
        let tensor = try NumpyFile.decode(data, source: "parameter array \(index)", name: "array\(index)")
        try self.init(tensor: tensor)
    }

    /// The values of a numeric tensor (an ONNX initializer, a decoded `.npy`).
    public init(tensor: Tensor) throws(TernError) {
        let values: [Double]
        switch tensor.dataType {
        case .fp32: values = try tensor.values(as: Float.self).map { Double($0) }
        case .fp64: values = try tensor.values(as: Double.self)
        case .fp16: values = try tensor.values(as: Float16.self).map { Double($0) }
        case .int64: values = try tensor.values(as: Int64.self).map { Double($0) }
        case .int32: values = try tensor.values(as: Int32.self).map { Double($0) }
        case .int16: values = try tensor.values(as: Int16.self).map { Double($0) }
        case .int8: values = try tensor.values(as: Int8.self).map { Double($0) }
        case .uint8: values = try tensor.values(as: UInt8.self).map { Double($0) }
        case .uint16: values = try tensor.values(as: UInt16.self).map { Double($0) }
        case .uint32: values = try tensor.values(as: UInt32.self).map { Double($0) }
        case .uint64: values = try tensor.values(as: UInt64.self).map { Double($0) }
        case .bool: values = try tensor.values(as: Bool.self).map { $0 ? 1 : 0 }
        default: throw .invalidArgument("\(tensor.name): \(tensor.dataType.rawValue) arrays cannot be model parameters")
        }
        self.init(dataType: tensor.dataType, shape: tensor.shape.map { Int($0) }, values: values)
    }

    /// The array as a tensor of its own element type (integers rounded to nearest and clamped to
    /// the type's range; NaN becomes 0), so no value can trap the conversion.
    public func tensor(name: String) -> Tensor {
        let shape = self.shape.map { Int64($0) }
        func integers<T: FixedWidthInteger & TensorScalar>(_: T.Type) -> [T] {
            values.map { value in
                guard !value.isNaN else { return 0 }
                let rounded = value.rounded()
                if rounded <= Double(T.min) { return T.min }
                if rounded >= Double(T.max) { return T.max }
                return T(rounded)
            }
        }
        switch dataType {
        case .fp64: return Tensor(name: name, shape: shape, values: values)
        case .fp16: return Tensor(name: name, shape: shape, values: values.map { Float16($0) })
        case .int64: return Tensor(name: name, shape: shape, values: integers(Int64.self))
        case .int32: return Tensor(name: name, shape: shape, values: integers(Int32.self))
        case .int16: return Tensor(name: name, shape: shape, values: integers(Int16.self))
        case .int8: return Tensor(name: name, shape: shape, values: integers(Int8.self))
        case .uint8: return Tensor(name: name, shape: shape, values: integers(UInt8.self))
        case .uint16: return Tensor(name: name, shape: shape, values: integers(UInt16.self))
        case .uint32: return Tensor(name: name, shape: shape, values: integers(UInt32.self))
        case .uint64: return Tensor(name: name, shape: shape, values: integers(UInt64.self))
        case .bool: return Tensor(name: name, shape: shape, values: values.map { $0 != 0 })
        default: return Tensor(name: name, shape: shape, values: values.map { Float($0) })
        }
    }

    /// The array as the `.npy` file `np.save(..., allow_pickle=False)` writes.
    public func npy() throws(TernError) -> Data {
        try NumpyFile.encode(tensor(name: "array"))
    }

    /// The same values in another element type.
    public func converted(to type: DataType) -> ParameterArray {
        ParameterArray(dataType: type, shape: shape, values: values)
    }

    /// The same shape and type with other values.
    public func with(values: [Double]) -> ParameterArray {
        ParameterArray(dataType: dataType, shape: shape, values: values)
    }
}

extension Array where Element == ParameterArray {
    /// Whether `other` has the same number of arrays with the same shapes.
    public func sameLayout(as other: [ParameterArray]) -> Bool {
        count == other.count && zip(self, other).allSatisfy { $0.shape == $1.shape }
    }

    /// Describes the first difference in layout from `expected`, or nil when they match.
    public func layoutMismatch(expected: [ParameterArray]) -> String? {
        if count != expected.count { return "\(count) arrays where \(expected.count) were expected" }
        for (index, (got, want)) in zip(self, expected).enumerated() where got.shape != want.shape {
            return "array \(index) has shape \(got.shape) where \(want.shape) was expected"
        }
        return nil
    }
}
