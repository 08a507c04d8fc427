import Foundation
import TernCore

/// Joins the inputs of several requests into one batch along the first dimension and splits the
/// batch's outputs back into each request's rows. A batch of one request is passed through without
/// a copy.
enum BatchAssembly {
    /// The batch inputs of `requests` (each a list of tensors with the same names, dtypes and
    /// non-batch dims, as the scheduler guarantees), in the first request's input order.
    static func merge(_ requests: [[Tensor]]) throws(TernError) -> [Tensor] {
        guard requests.count > 1 else { return requests.first ?? [] }
        let first = requests[0]
        var merged: [Tensor] = []
        merged.reserveCapacity(first.count)
        for template in first {
            var rows: Int64 = 0
            var size = 0
            var parts: [Tensor] = []
            parts.reserveCapacity(requests.count)
            for inputs in requests {
                guard let tensor = inputs.first(where: { $0.name == template.name }), tensor.dataType == template.dataType,
                    tensor.shape.dropFirst() == template.shape.dropFirst(), let batch = tensor.shape.first
                else {
                    throw .internalError("requests batched together disagree on input '\(template.name)'")
                }
                rows += batch
                size += tensor.data.count
                parts.append(tensor)
            }
            var data = Data(capacity: size)
            for part in parts { data.append(part.data) }
            merged.append(Tensor(name: template.name, dataType: template.dataType, shape: [rows] + template.shape.dropFirst(), data: data))
        }
        return merged
    }

    /// Each request's rows of `outputs`, for requests of `rows` rows each (in batch order).
    static func split(_ outputs: [Tensor], rows: [Int]) throws(TernError) -> [[Tensor]] {
        guard rows.count > 1 else { return [outputs] }
        let total = rows.reduce(0, +)
        var result = Array(repeating: [Tensor](), count: rows.count)
        for tensor in outputs {
            guard let first = tensor.shape.first, first == Int64(total) else {
                throw .internalError("output '\(tensor.name)' has shape \(tensor.shape), but the batch has \(total) rows")
            }
            let rowShape = Array(tensor.shape.dropFirst())
            let perRow = Tensor.elementCount(of: rowShape)
            if tensor.dataType == .bytes {
                let elements = try tensor.strings()
                var start = 0
                for (index, count) in rows.enumerated() {
                    let slice = Array(elements[start..<(start + count * perRow)])
                    result[index].append(Tensor(name: tensor.name, shape: [Int64(count)] + rowShape, strings: slice))
                    start += count * perRow
                }
            } else {
                let rowBytes = perRow * (tensor.dataType.elementSize ?? 0)
                guard rowBytes * total == tensor.data.count else {
                    throw .internalError("output '\(tensor.name)' holds \(tensor.data.count) bytes, not \(rowBytes * total)")
                }
                var offset = tensor.data.startIndex
                for (index, count) in rows.enumerated() {
                    let end = offset + count * rowBytes
                    result[index].append(Tensor(
                        name: tensor.name, dataType: tensor.dataType, shape: [Int64(count)] + rowShape,
                        data: tensor.data.subdata(in: offset..<end)))
                    offset = end
                }
            }
        }
        return result
    }
}
