import Foundation
import TernCore

/// Turns ORT output values into Tensors. Numeric outputs are not copied: the tensor's `Data`
/// views the value's memory and releases the value when the last view goes away.
struct ORTValueReader {
    let library: ORTLibrary

    /// Element type and shape from an `OrtTensorTypeAndShapeInfo`.
    func typeAndShape(_ info: ORTHandle) throws(TernError) -> (Int32, [Int64]) {
        var elementType: Int32 = 0
        try library.check(
            library.function(.getTensorElementType, as: ORTSignature.GetInt32.self)(info, &elementType),
            "reading a tensor's element type")
        var rank = 0
        try library.check(
            library.function(.getDimensionsCount, as: ORTSignature.GetCount.self)(info, &rank),
            "reading a tensor's rank")
        var shape = [Int64](repeating: 0, count: rank)
        if rank > 0 {
            try library.check(
                library.function(.getDimensions, as: ORTSignature.GetDimensions.self)(info, &shape, rank),
                "reading a tensor's shape")
        }
        return (elementType, shape)
    }

    /// Takes ownership of `value` and returns it as a tensor.
    func tensor(named name: String, from value: ORTHandle) throws(TernError) -> Tensor {
        let release = library.function(.releaseValue, as: ORTSignature.Release.self)
        var info: ORTHandle?
        do {
            try library.check(
                library.function(.getTensorTypeAndShape, as: ORTSignature.GetTensorTypeAndShape.self)(value, &info),
                "reading output '\(name)'")
        } catch {
            release(value)
            throw error
        }
        defer { library.function(.releaseTensorTypeAndShapeInfo, as: ORTSignature.Release.self)(info) }
        let (rawType, shape): (Int32, [Int64])
        do {
            (rawType, shape) = try typeAndShape(info!)
        } catch {
            release(value)
            throw error
        }
        guard let dataType = ORTElementType(rawValue: rawType)?.dataType else {
            release(value)
            throw .internalError("output '\(name)' has ONNX element type \(rawType), which Tern does not serve")
        }
        if dataType == .bytes {
            defer { release(value) }
            return Tensor(name: name, dataType: .bytes, shape: shape, data: try readStrings(value, count: Tensor.elementCount(of: shape), name: name))
        }
        let byteCount = Tensor.elementCount(of: shape) * dataType.elementSize!
        var pointer: UnsafeMutableRawPointer?
        do {
            try library.check(
                library.function(.getTensorMutableData, as: ORTSignature.GetTensorMutableData.self)(value, &pointer),
                "reading output '\(name)'")
        } catch {
            release(value)
            throw error
        }
        guard let pointer, byteCount > 0 else {
            release(value)
            return Tensor(name: name, dataType: dataType, shape: shape, data: Data())
        }
        let owned = OwnedValue(value: value, release: release)
        let data = Data(bytesNoCopy: pointer, count: byteCount, deallocator: .custom { _, _ in owned.free() })
        return Tensor(name: name, dataType: dataType, shape: shape, data: data)
    }

    private func readStrings(_ value: ORTHandle, count: Int, name: String) throws(TernError) -> Data {
        var total = 0
        try library.check(
            library.function(.getStringTensorDataLength, as: ORTSignature.GetStringTensorDataLength.self)(value, &total),
            "reading string output '\(name)'")
        var content = [UInt8](repeating: 0, count: max(total, 1))
        var offsets = [Int](repeating: 0, count: max(count, 1))
        if count > 0 {
            try library.check(
                library.function(.getStringTensorContent, as: ORTSignature.GetStringTensorContent.self)(
                    value, &content, total, &offsets, count),
                "reading string output '\(name)'")
        }
        var out = Data(capacity: total + 4 * count)
        for index in 0..<count {
            let start = offsets[index]
            let end = index + 1 < count ? offsets[index + 1] : total
            var length = UInt32(end - start).littleEndian
            withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
            out.append(contentsOf: content[start..<end])
        }
        return out
    }
}

/// Keeps an OrtValue alive while a `Data` views its memory.
private final class OwnedValue: @unchecked Sendable {
    // @unchecked: freed exactly once, by Data's deallocator.
    let value: ORTHandle
    let release: ORTSignature.Release
    init(value: ORTHandle, release: @escaping ORTSignature.Release) {
        self.value = value
        self.release = release
    }
    func free() { release(value) }
}
