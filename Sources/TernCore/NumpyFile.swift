import Foundation

/// Reads `.npy` files (format 1.0-3.0, little-endian, C order) into tensors (`tern infer` inputs,
/// the validation sets of hot-swap gates, Flower's parameters) and writes them as `np.save` does.
public enum NumpyFile {
    /// Reads the `.npy` file at `path` into a tensor called `name`, throwing an invalid-argument error when the file
    /// cannot be read or decoded.
    public static func read(_ path: String, name: String) throws(TernError) -> Tensor {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .invalidArgument("cannot read \(path): \(error.localizedDescription)")
        }
        return try decode(data, source: path, name: name)
    }

    /// A `.npy` file's bytes as a tensor; `source` names the file in errors. Every length in the
    /// file is checked against the bytes there are, and the data must fill the shape exactly.
    public static func decode(_ data: Data, source: String, name: String) throws(TernError) -> Tensor {
        let bytes = data.startIndex == 0 ? data : Data(data)  // indexed from 0 below
        guard bytes.count >= 10, bytes.prefix(6).elementsEqual([0x93] + Array("NUMPY".utf8)) else {
            throw TernError.invalidArgument("\(source) is not a .npy file")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw TernError.invalidArgument("\(source): the .npy header ends early") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw TernError.invalidArgument("\(source): .npy format version \(major) is not supported (1 to 3 are)")
        }
        guard headerLength <= bytes.count - headerStart else {
            throw TernError.invalidArgument("\(source): the .npy header says \(headerLength) bytes but the file has \(bytes.count - headerStart) after the preamble")
        }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard let descr = field("descr", in: header), let shapeText = field("shape", in: header) else {
            throw TernError.invalidArgument("\(source): cannot read the .npy header")
        }
        if header.contains("'fortran_order': True") { throw TernError.invalidArgument("\(source): Fortran-order arrays are not supported") }
        guard let type = descriptors[descr] else { throw TernError.invalidArgument("\(source): unsupported dtype \(descr)") }
        var shape: [Int64] = []
        for part in shapeText.split(whereSeparator: { !$0.isNumber }) {
            guard let dim = Int64(part) else { throw TernError.invalidArgument("\(source): shape \(shapeText) has a dimension out of range") }
            shape.append(dim)
        }
        let tensor = Tensor(name: name, dataType: type, shape: shape, data: Data(bytes[(headerStart + headerLength)...]))
        do {
            try tensor.validateByteSize()
        } catch {
            throw TernError.invalidArgument("\(source): \(error.message)")
        }
        return tensor
    }

    /// The `.npy` bytes `np.save(path, array, allow_pickle=False)` writes for `tensor`: format 1.0,
    /// the header's dictionary with its keys sorted, room to grow the first dimension, padded with
    /// spaces to a multiple of 64 bytes and ended by a newline, then the data. Throws for strings.
    public static func encode(_ tensor: Tensor) throws(TernError) -> Data {
        guard let descr = descriptors.first(where: { $0.value == tensor.dataType })?.key else {
            throw .invalidArgument("\(tensor.dataType.rawValue) tensors have no .npy form without pickling")
        }
        let dims = tensor.shape.map(String.init)
        let shape = dims.count == 1 ? "(\(dims[0]),)" : "(" + dims.joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        if let first = dims.first { header += String(repeating: " ", count: max(0, 21 - first.count)) }
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = header.utf8.count
        guard length <= Int(UInt16.max) else { throw .invalidArgument("a shape of \(dims.count) dimensions is too long for a .npy 1.0 header") }
        data.append(contentsOf: [UInt8(length & 0xff), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(tensor.data)
        return data
    }

    private static let descriptors: [String: DataType] = [
        "|b1": .bool, "|u1": .uint8, "<u2": .uint16, "<u4": .uint32, "<u8": .uint64, "|i1": .int8, "<i2": .int16,
        "<i4": .int32, "<i8": .int64, "<f2": .fp16, "<f4": .fp32, "<f8": .fp64,
    ]

    private static func field(_ key: String, in header: String) -> String? {
        guard let range = header.range(of: "'\(key)':") else { return nil }
        let rest = header[range.upperBound...].drop(while: { $0 == " " })
        if rest.first == "(" { return rest.firstIndex(of: ")").map { String(rest[...$0]) } }
        if rest.first == "'" { return String(rest.dropFirst().prefix(while: { $0 != "'" })) }
        return nil
    }
}
