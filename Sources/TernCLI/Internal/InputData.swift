import Foundation
import TernCore
import TernClient

/// Request inputs for `tern perf`: random or zero data of the model's shapes, or tensors read from
/// a JSON file `{"INPUT": {"shape": [...], "data": [...]}}` or a `.npy` file per input.
enum InputData {
    static func random(for inputs: [TensorSpec], batchSize: Int, batched: Bool, zero: Bool = false) -> [Tensor] {
        var generator = SystemRandomNumberGenerator()
        return inputs.map { spec in
            var shape = spec.shape.map { $0 < 0 ? Int64(1) : $0 }
            if batched { shape[0] = Int64(batchSize) }
            let count = Tensor.elementCount(of: shape)
            if spec.dataType == .bytes {
                let strings = (0..<count).map { _ in Data((0..<8).map { _ in UInt8.random(in: 97...122, using: &generator) }) }
                return Tensor(name: spec.name, shape: shape, strings: strings)
            }
            let size = spec.dataType.elementSize!
            var data = Data(count: count * size)
            if !zero {
                switch spec.dataType {
                case .fp32:
                    data = [Float]((0..<count).map { _ in Float.random(in: 0..<1, using: &generator) }).withUnsafeBytes { Data($0) }
                case .fp64:
                    data = [Double]((0..<count).map { _ in Double.random(in: 0..<1, using: &generator) }).withUnsafeBytes { Data($0) }
                case .fp16:
                    data = [Float16]((0..<count).map { _ in Float16(Float.random(in: 0..<1, using: &generator)) }).withUnsafeBytes { Data($0) }
                case .bool:
                    data = Data((0..<count).map { _ in UInt8.random(in: 0...1, using: &generator) })
                default:
                    // Small non-negative integers stay valid as indices, ids and token numbers.
                    data = Data((0..<(count * size)).map { index in index % size == 0 ? UInt8.random(in: 0...9, using: &generator) : 0 })
                }
            }
            return Tensor(name: spec.name, dataType: spec.dataType, shape: shape, data: data)
        }
    }

    static func fromJSONFile(_ path: String, specs: [TensorSpec]) throws -> [Tensor] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        guard let map = object as? [String: Any] else { throw TernError.invalidArgument("\(path): expected an object of inputs") }
        return try specs.map { spec in
            guard let entry = map[spec.name] as? [String: Any], let shape = entry["shape"] as? [NSNumber], let data = entry["data"] else {
                throw TernError.invalidArgument("\(path): input '\(spec.name)' needs \"shape\" and \"data\"")
            }
            return try KServeHTTPEncoding.tensor(name: spec.name, dataType: spec.dataType, shape: shape.map(\.int64Value), json: data)
        }
    }
}
