import Foundation
import TernCore

/// JSON tensor data of the KServe v2 REST protocol: `data` as a flat or nested row-major array.
package enum JSONTensorCodec {
    /// Whether a value JSONSerialization produced is a JSON `true`/`false`. On Linux every JSON
    /// number also casts to Bool, so the cast alone cannot tell.
    package static func isBool(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return value is Bool }
        return String(cString: number.objCType) == "c"
    }

    /// Packs JSON values (already flattened) into the tensor's byte layout.
    package static func pack(_ values: [JSONValue], as type: DataType, name: String) throws(TernError) -> Data {
        func number(_ value: JSONValue) throws(TernError) -> JSONNumber {
            guard let number = value.numberValue else {
                throw .invalidArgument("input '\(name)': expected \(type.protocolName) numbers in 'data', found \(value.description)")
            }
            return number
        }
        /// Values beyond the type's range are refused (they would become infinities, which JSON
        /// cannot carry back); `limit` is the largest finite magnitude.
        func floats<T>(limit: Double = .greatestFiniteMagnitude, _ convert: (Double) -> T) throws(TernError) -> Data {
            var out = [T]()
            out.reserveCapacity(values.count)
            for (index, value) in values.enumerated() {
                let double = try number(value).double
                guard double.magnitude <= limit || !double.isFinite else {
                    throw .invalidArgument("input '\(name)': data[\(index)] = \(value.description) is beyond the range of \(type.protocolName) (±\(limit))")
                }
                out.append(convert(double))
            }
            return out.withUnsafeBytes { Data($0) }
        }
        func integers<T: FixedWidthInteger>(_: T.Type) throws(TernError) -> Data {
            var out = [T]()
            out.reserveCapacity(values.count)
            for value in values {
                let n = try number(value)
                guard let v = n.int.flatMap({ T(exactly: $0) }) ?? n.uint.flatMap({ T(exactly: $0) }) else {
                    throw .invalidArgument("input '\(name)': \(n.description) is not a \(type.protocolName) value")
                }
                out.append(v)
            }
            return out.withUnsafeBytes { Data($0) }
        }
        switch type {
        case .bool:
            var out = [UInt8]()
            out.reserveCapacity(values.count)
            for value in values {
                guard let bool = value.boolValue else {
                    throw .invalidArgument("input '\(name)': expected true/false in 'data' for BOOL, found \(value.description)")
                }
                out.append(bool ? 1 : 0)
            }
            return Data(out)
        case .uint8: return try integers(UInt8.self)
        case .uint16: return try integers(UInt16.self)
        case .uint32: return try integers(UInt32.self)
        case .uint64: return try integers(UInt64.self)
        case .int8: return try integers(Int8.self)
        case .int16: return try integers(Int16.self)
        case .int32: return try integers(Int32.self)
        case .int64: return try integers(Int64.self)
        case .fp16: return try floats(limit: Double(Float16.greatestFiniteMagnitude)) { Float16($0) }
        case .fp32: return try floats(limit: Double(Float.greatestFiniteMagnitude)) { Float($0) }
        case .fp64: return try floats { $0 }
        case .bf16: return try floats(limit: Double(Float.greatestFiniteMagnitude)) { UInt16(truncatingIfNeeded: Float($0).bitPattern >> 16) }
        case .bytes:
            var elements: [Data] = []
            elements.reserveCapacity(values.count)
            for value in values {
                guard let string = value.stringValue else {
                    throw .invalidArgument("input '\(name)': expected strings in 'data' for BYTES, found \(value.description)")
                }
                elements.append(Data(string.utf8))
            }
            return BytesCodec.encode(elements)
        }
    }

    /// Flattens nested JSON arrays in row-major order.
    package static func flatten(_ value: JSONValue) -> [JSONValue] {
        var out: [JSONValue] = []
        value.flatten(into: &out)
        return out
    }

    /// The tensor's elements as JSON values.
    package static func unpack(_ tensor: Tensor) throws(TernError) -> [Any] {
        switch tensor.dataType {
        case .bool: return tensor.data.map { $0 != 0 }
        case .uint8: return try tensor.values(as: UInt8.self).map { Int($0) }
        case .uint16: return try tensor.values(as: UInt16.self).map { Int($0) }
        case .uint32: return try tensor.values(as: UInt32.self).map { Int($0) }
        case .uint64: return try tensor.values(as: UInt64.self).map { NSNumber(value: $0) }
        case .int8: return try tensor.values(as: Int8.self).map { Int($0) }
        case .int16: return try tensor.values(as: Int16.self).map { Int($0) }
        case .int32: return try tensor.values(as: Int32.self).map { Int($0) }
        case .int64: return try tensor.values(as: Int64.self).map { NSNumber(value: $0) }
        case .fp16: return try tensor.values(as: Float16.self).map { Double(Float($0)) }
        case .fp32: return try tensor.values(as: Float.self).map { Double($0) }
        case .fp64: return try tensor.values(as: Double.self)
        case .bf16:
            let raw: [UInt16] = tensor.data.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            return raw.map { Double(Float(bitPattern: UInt32($0) << 16)) }
        case .bytes:
            return try tensor.strings().map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// `object` (Foundation JSON values) as JSON bytes, slashes unescaped.
    package static func jsonBytes(_ object: Any) throws(TernError) -> Data {
        do {
            return try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])
        } catch {
            throw .internalError("cannot encode the response as JSON: \(error)")
        }
    }
}
