import Foundation
import TernCore

/// Triton's classification extension: an output becomes, per batch row, the `count` highest
/// entries as BYTES strings "value:index" or "value:index:label".
enum Classification {
    static func apply(to tensor: Tensor, count: Int, batched: Bool, labels: [String]) throws(TernError) -> Tensor {
        let scores = try scoresAsDoubles(tensor)
        let rows = batched ? max(Int(tensor.shape.first ?? 1), 1) : 1
        let perRow = rows == 0 ? 0 : scores.count / rows
        let k = min(count, perRow)
        var strings: [Data] = []
        strings.reserveCapacity(rows * k)
        for row in 0..<rows {
            let slice = scores[(row * perRow)..<((row + 1) * perRow)]
            let top = slice.indices.sorted { slice[$0] > slice[$1] || (slice[$0] == slice[$1] && $0 < $1) }.prefix(k)
            for index in top {
                let classIndex = index - row * perRow
                var text = String(format: "%f:%d", slice[index], classIndex)
                if classIndex < labels.count { text += ":" + labels[classIndex] }
                strings.append(Data(text.utf8))
            }
        }
        let shape: [Int64] = batched ? [Int64(rows), Int64(k)] : [Int64(k)]
        return Tensor(name: tensor.name, shape: shape, strings: strings)
    }

    private static func scoresAsDoubles(_ tensor: Tensor) throws(TernError) -> [Double] {
        switch tensor.dataType {
        case .fp32: return try tensor.values(as: Float.self).map(Double.init)
        case .fp64: return try tensor.values(as: Double.self)
        case .fp16: return try tensor.values(as: Float16.self).map(Double.init)
        case .int8: return try tensor.values(as: Int8.self).map(Double.init)
        case .int16: return try tensor.values(as: Int16.self).map(Double.init)
        case .int32: return try tensor.values(as: Int32.self).map(Double.init)
        case .int64: return try tensor.values(as: Int64.self).map(Double.init)
        case .uint8: return try tensor.values(as: UInt8.self).map(Double.init)
        case .uint16: return try tensor.values(as: UInt16.self).map(Double.init)
        case .uint32: return try tensor.values(as: UInt32.self).map(Double.init)
        case .uint64: return try tensor.values(as: UInt64.self).map { Double($0) }  // not Double.init: that picks init(bitPattern:)
        case .bool, .bytes, .bf16:
            throw .invalidArgument("classification is not supported for output '\(tensor.name)' of type \(tensor.dataType.protocolName)")
        }
    }
}
