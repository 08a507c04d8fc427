import Foundation

/// The KServe binary layout of BYTES elements: each element is a 4-byte little-endian length
/// followed by that many bytes.
public enum BytesCodec {
    /// Serializes elements into the length-prefixed layout.
    public static func encode(_ elements: [Data]) -> Data {
        var out = Data(capacity: elements.reduce(0) { $0 + 4 + $1.count })
        for element in elements {
            var length = UInt32(element.count).littleEndian
            withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
            out.append(element)
        }
        return out
    }

    /// Splits the layout into elements; throws on a length that runs past the end.
    public static func decode(_ data: Data, name: String) throws(TernError) -> [Data] {
        var elements: [Data] = []
        try walk(data, name: name) { range in elements.append(data[range]) }
        return elements
    }

    /// Counts the elements without copying them.
    public static func count(in data: Data, name: String) throws(TernError) -> Int {
        var count = 0
        try walk(data, name: name) { _ in count += 1 }
        return count
    }

    static func walk(_ data: Data, name: String, _ body: (Range<Data.Index>) -> Void) throws(TernError) {
        var index = data.startIndex
        while index < data.endIndex {
            guard data.endIndex - index >= 4 else {
                throw .invalidArgument("input '\(name)': BYTES data ends inside an element's 4-byte length prefix")
            }
            let length = Int(
                UInt32(data[index]) | UInt32(data[index + 1]) << 8 | UInt32(data[index + 2]) << 16
                    | UInt32(data[index + 3]) << 24)
            let start = index + 4
            guard data.endIndex - start >= length else {
                throw .invalidArgument(
                    "input '\(name)': BYTES element of \(length) bytes runs past the end of the tensor data")
            }
            body(start..<(start + length))
            index = start + length
        }
    }
}
