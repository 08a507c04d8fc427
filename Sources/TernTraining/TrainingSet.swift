import Foundation
import TernCore

/// Labelled rows a device trains on: `x` float rows of one width and integer class labels `y`.
/// Read from an `.npz` (NumPy's `np.savez`: arrays `x` [N, D] and `y` [N]) or a CSV file (one row
/// per line, the label last; a header line is skipped).
public struct TrainingSet: Sendable, Equatable {
    /// The rows, row-major.
    public var features: [Double]
    /// One label per row.
    public var labels: [Int]
    /// The number of features per row.
    public var width: Int

    /// Rows of `width` features with their labels.
    public init(features: [Double], labels: [Int], width: Int) {
        precondition(width > 0 && features.count == labels.count * width, "TrainingSet: \(features.count) values for \(labels.count) rows of \(width)")
        self.features = features
        self.labels = labels
        self.width = width
    }

    /// The number of rows.
    public var count: Int { labels.count }

    /// The rows at `indices`, with their labels.
    public func batch(_ indices: [Int]) -> (x: [Double], y: [Int]) {
        var x: [Double] = []
        x.reserveCapacity(indices.count * width)
        for index in indices { x.append(contentsOf: features[(index * width)..<((index + 1) * width)]) }
        return (x, indices.map { labels[$0] })
    }

    /// Reads `path`: `.npz` or `.csv` by its extension.
    public static func load(path: String) throws(TernError) -> TrainingSet {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .invalidArgument("cannot read \(path): \(error.localizedDescription)")
        }
        if path.lowercased().hasSuffix(".csv") { return try csv(String(decoding: data, as: UTF8.self), source: path) }
        let arrays = try NPZArchive.arrays(data, source: path)
        guard let x = arrays["x"], let y = arrays["y"] else {
            throw .invalidArgument("\(path) must hold arrays 'x' and 'y' (it has \(arrays.keys.sorted().joined(separator: ", ")))")
        }
        guard x.shape.count == 2, y.shape.count == 1, x.shape[0] == y.shape[0], x.shape[1] > 0 else {
            throw .invalidArgument("\(path): x must be [N, D] and y [N]; they are \(x.shape) and \(y.shape)")
        }
        guard x.dataType == .fp32 || x.dataType == .fp64, [.int64, .int32, .int16, .int8, .uint8].contains(y.dataType) else {
            throw .invalidArgument("\(path): x must be float32 (or float64) and y integers; they are \(x.dataType.rawValue) and \(y.dataType.rawValue)")
        }
        let features = try ParameterArray(tensor: x).values
        let raw = try ParameterArray(tensor: y).values
        guard raw.allSatisfy({ $0 >= 0 && $0 < 1e9 }), features.allSatisfy(\.isFinite) else {
            throw .invalidArgument("\(path): labels must be class numbers from 0 and features finite")
        }
        let labels = raw.map { Int($0) }
        return TrainingSet(features: features, labels: labels, width: Int(x.shape[1]))
    }

    /// Rows of a CSV text, the label last.
    public static func csv(_ text: String, source: String) throws(TernError) -> TrainingSet {
        var features: [Double] = []
        var labels: [Int] = []
        var width: Int?
        for (number, raw) in text.split(whereSeparator: \.isNewline).enumerated() {
            let fields = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !fields.isEmpty, !(fields.count == 1 && fields[0].isEmpty) else { continue }
            let values = fields.map { Double($0) }
            if values.contains(where: { $0 == nil }) {
                if number == 0 { continue }  // a header
                throw .invalidArgument("\(source):\(number + 1): not a number in '\(raw)'")
            }
            let numbers = values.compactMap { $0 }
            guard numbers.count >= 2 else { throw .invalidArgument("\(source):\(number + 1): a row needs features and a label") }
            if let width, numbers.count - 1 != width {
                throw .invalidArgument("\(source):\(number + 1): \(numbers.count - 1) features where earlier rows have \(width)")
            }
            width = numbers.count - 1
            guard let label = numbers.last, label == label.rounded(), label >= 0, label < 1e9, numbers.allSatisfy(\.isFinite) else {
                throw .invalidArgument("\(source):\(number + 1): the label must be a non-negative integer")
            }
            features.append(contentsOf: numbers.dropLast())
            labels.append(Int(label))
        }
        guard let width, !labels.isEmpty else { throw .invalidArgument("\(source) has no rows") }
        return TrainingSet(features: features, labels: labels, width: width)
    }
}

/// The arrays of an `.npz` file: a ZIP archive of `.npy` files (`np.savez`, which stores them
/// uncompressed, with ZIP64 sizes). Entries are found through the central directory.
enum NPZArchive {
    static func arrays(_ data: Data, source: String) throws(TernError) -> [String: Tensor] {
        let bytes = [UInt8](data)
        // Every offset and size read from the file is checked against the file's length before use;
        // 64-bit fields above the file's size are read as an impossible value (-1), never a trap.
        func fits(_ at: Int, _ length: Int) -> Bool { at >= 0 && at <= bytes.count - length }
        func u16(_ at: Int) -> Int { fits(at, 2) ? Int(bytes[at]) | Int(bytes[at + 1]) << 8 : -1 }
        func u32(_ at: Int) -> Int { fits(at, 4) ? (0..<4).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } : -1 }
        func u64(_ at: Int) -> Int {
            guard fits(at, 8) else { return -1 }
            let value = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
            return value <= UInt64(bytes.count) ? Int(value) : -1
        }
        // The end-of-central-directory record: the last 0x06054b50 within 64 KiB of the end.
        var end = -1
        var at = max(bytes.count - 22, -1)
        while at >= max(0, bytes.count - 65_557) {
            if u32(at) == 0x0605_4B50 { end = at; break }
            at -= 1
        }
        guard end >= 0, bytes.count >= 22 else { throw .invalidArgument("\(source) is not an .npz (ZIP) file") }
        var entries = u16(end + 10)
        var directory = u32(end + 16)
        if (entries == 0xFFFF || directory == 0xFFFF_FFFF), end >= 20, u32(end - 20) == 0x0706_4B50 {
            let record = u64(end - 20 + 8)
            guard u32(record) == 0x0606_4B50 else { throw .invalidArgument("\(source): broken ZIP64 directory") }
            entries = u64(record + 32)
            directory = u64(record + 48)
        }
        guard entries >= 0, entries <= bytes.count / 46, directory >= 0 else { throw .invalidArgument("\(source): broken ZIP directory") }
        var out: [String: Tensor] = [:]
        var position = directory
        for _ in 0..<entries {
            guard u32(position) == 0x0201_4B50 else { throw .invalidArgument("\(source): broken ZIP directory") }
            let method = u16(position + 10)
            var compressed = u32(position + 20)
            var size = u32(position + 24)
            let nameLength = u16(position + 28), extraLength = u16(position + 30), commentLength = u16(position + 32)
            var offset = u32(position + 42)
            guard nameLength >= 0, extraLength >= 0, commentLength >= 0, fits(position + 46, nameLength) else {
                throw .invalidArgument("\(source): broken ZIP directory")
            }
            let name = String(decoding: bytes[(position + 46)..<(position + 46 + nameLength)], as: UTF8.self)
            // ZIP64 sizes and offset, in that order, for each field that says 0xFFFFFFFF.
            var extra = position + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = u16(extra), length = u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF { size = u64(field); field += 8 }
                    if compressed == 0xFFFF_FFFF { compressed = u64(field); field += 8 }
                    if offset == 0xFFFF_FFFF { offset = u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0 else {
                throw .invalidArgument("\(source): \(name) is compressed; write the file with np.savez (not np.savez_compressed)")
            }
            guard offset >= 0, u32(offset) == 0x0403_4B50, u16(offset + 26) >= 0, u16(offset + 28) >= 0 else {
                throw .invalidArgument("\(source): broken ZIP entry \(name)")
            }
            let start = offset + 30 + u16(offset + 26) + u16(offset + 28)
            guard size >= 0, size == compressed, fits(start, size) else { throw .invalidArgument("\(source): entry \(name) runs past the end") }
            let key = name.hasSuffix(".npy") ? String(name.dropLast(4)) : name
            out[key] = try NumpyFile.decode(Data(bytes[start..<(start + size)]), source: "\(source):\(name)", name: key)
            position += 46 + nameLength + extraLength + commentLength
        }
        return out
    }
}
