import Foundation

/// Reads `.npy` files (format 1.0-3.0, little-endian, C order) into tensors: `tern infer` inputs
/// and the validation sets of hot-swap gates.
public enum NumpyFile {
    public static func read(_ path: String, name: String) throws(TernError) -> Tensor {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .invalidArgument("cannot read \(path): \(error.localizedDescription)")
        }
        guard data.count > 10, data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
            throw TernError.invalidArgument("\(path) is not a .npy file")
        }
        let major = data[data.startIndex + 6]
        let headerLength: Int
        let headerStart: Int
        if major == 1 {
            headerLength = Int(data[data.startIndex + 8]) | Int(data[data.startIndex + 9]) << 8
            headerStart = 10
        } else {
            headerLength = (0..<4).reduce(0) { $0 | Int(data[data.startIndex + 8 + $1]) << (8 * $1) }
            headerStart = 12
        }
        let header = String(decoding: data[(data.startIndex + headerStart)..<(data.startIndex + headerStart + headerLength)], as: UTF8.self)
        guard let descr = field("descr", in: header), let shapeText = field("shape", in: header) else {
            throw TernError.invalidArgument("\(path): cannot read the .npy header")
        }
        if header.contains("'fortran_order': True") { throw TernError.invalidArgument("\(path): Fortran-order arrays are not supported") }
        let types: [String: DataType] = [
            "|b1": .bool, "|u1": .uint8, "<u2": .uint16, "<u4": .uint32, "<u8": .uint64, "|i1": .int8, "<i2": .int16,
            "<i4": .int32, "<i8": .int64, "<f2": .fp16, "<f4": .fp32, "<f8": .fp64,
        ]
        guard let type = types[descr] else { throw TernError.invalidArgument("\(path): unsupported dtype \(descr)") }
        let shape = shapeText.split(whereSeparator: { !$0.isNumber }).compactMap { Int64($0) }
        let body = data[(data.startIndex + headerStart + headerLength)...]
        return Tensor(name: name, dataType: type, shape: shape, data: Data(body))
    }

    private static func field(_ key: String, in header: String) -> String? {
        guard let range = header.range(of: "'\(key)':") else { return nil }
        let rest = header[range.upperBound...].drop(while: { $0 == " " })
        if rest.first == "(" { return rest.firstIndex(of: ")").map { String(rest[...$0]) } }
        if rest.first == "'" { return String(rest.dropFirst().prefix(while: { $0 != "'" })) }
        return nil
    }
}
