import Foundation
import TernCore

/// JSON tensor data of the KServe v2 REST protocol: `data` as a flat or nested row-major array.
enum JSONTensorCodec {
    /// Whether a value JSONSerialization produced is a JSON `true`/`false`. On Linux every JSON
    /// number also casts to Bool, so the cast alone cannot tell.
    static func isBool(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return value is Bool }
        return String(cString: number.objCType) == "c"
    }

    /// Packs JSON values (already flattened) into the tensor's byte layout.
    static func pack(_ values: [Any], as type: DataType, name: String) throws(TernError) -> Data {
        func number(_ value: Any) throws(TernError) -> NSNumber {
            guard let number = value as? NSNumber, !isBool(value) else {
                throw .invalidArgument("input '\(name)': expected \(type.protocolName) numbers in 'data', found \(Swift.type(of: value)) '\(value)'")
            }
            return number
        }
        func packed<T>(_ convert: (NSNumber) -> T) throws(TernError) -> Data {
            var out = [T]()
            out.reserveCapacity(values.count)
            for value in values { out.append(convert(try number(value))) }
            return out.withUnsafeBytes { Data($0) }
        }
        func checked<T: BinaryInteger>(_ make: (Int64) -> T?, _ unsignedMake: (UInt64) -> T?) throws(TernError) -> Data {
            var out = [T]()
            out.reserveCapacity(values.count)
            for value in values {
                let n = try number(value)
                let double = n.doubleValue
                guard double.rounded() == double else {
                    throw .invalidArgument("input '\(name)': \(n) is not an integer (\(type.protocolName))")
                }
                guard let v = double < 0 ? make(n.int64Value) : unsignedMake(n.uint64Value) else {
                    throw .invalidArgument("input '\(name)': \(n) does not fit \(type.protocolName)")
                }
                out.append(v)
            }
            return out.withUnsafeBytes { Data($0) }
        }
        switch type {
        case .bool:
            var out = [UInt8]()
            for value in values {
                if isBool(value), let bool = value as? Bool { out.append(bool ? 1 : 0); continue }
                throw .invalidArgument("input '\(name)': expected true/false in 'data' for BOOL, found '\(value)'")
            }
            return Data(out)
        case .uint8: return try checked({ UInt8(exactly: $0) }, { UInt8(exactly: $0) })
        case .uint16: return try checked({ UInt16(exactly: $0) }, { UInt16(exactly: $0) })
        case .uint32: return try checked({ UInt32(exactly: $0) }, { UInt32(exactly: $0) })
        case .uint64: return try checked({ UInt64(exactly: $0) }, { UInt64(exactly: $0) })
        case .int8: return try checked({ Int8(exactly: $0) }, { Int8(exactly: $0) })
        case .int16: return try checked({ Int16(exactly: $0) }, { Int16(exactly: $0) })
        case .int32: return try checked({ Int32(exactly: $0) }, { Int32(exactly: $0) })
        case .int64: return try checked({ $0 }, { Int64(exactly: $0) })
        case .fp16: return try packed { Float16($0.floatValue) }
        case .fp32: return try packed { $0.floatValue }
        case .fp64: return try packed { $0.doubleValue }
        case .bf16: return try packed { UInt16(truncatingIfNeeded: $0.floatValue.bitPattern >> 16) }
        case .bytes:
            var elements: [Data] = []
            for value in values {
                guard let string = value as? String else {
                    throw .invalidArgument("input '\(name)': expected strings in 'data' for BYTES, found '\(value)'")
                }
                elements.append(Data(string.utf8))
            }
            return BytesCodec.encode(elements)
        }
    }

    /// Flattens nested JSON arrays in row-major order.
    static func flatten(_ value: Any) -> [Any] {
        guard let array = value as? [Any] else { return [value] }
        if !array.contains(where: { $0 is [Any] }) { return array }
        var out: [Any] = []
        for item in array { out += flatten(item) }
        return out
    }

    /// The tensor's elements as JSON values.
    static func unpack(_ tensor: Tensor) throws(TernError) -> [Any] {
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
}
