import Foundation
import TernCore

/// Triton's `model_warmup`: before a model version is ready, each sample runs `count` times (at
/// least once) on every instance, with zero, random or file data (`input_data_file` is read from
/// `<model>/warmup/<file>`, raw bytes as Triton lays them out; BYTES as 4-byte length-prefixed
/// elements). A sample that fails fails the load, naming the sample; warm-up runs do not count in
/// the model's statistics. For a stateful model the sample must also feed the control and state
/// inputs, as with Triton.
enum ModelWarmup {
    /// The inputs of one sample.
    static func inputs(
        of sample: Inference_ModelWarmup, config: ModelConfig, directory: URL
    ) throws(TernError) -> [Tensor] {
        let context = "model '\(config.name)': model_warmup '\(sample.name)'"
        var generator = SystemRandomNumberGenerator()
        var tensors: [Tensor] = []
        for name in sample.inputs.keys.sorted() {
            let input = sample.inputs[name]!
            guard let type = DataType(configType: input.dataType) else {
                throw .invalidArgument("\(context): input '\(name)' has no valid data_type")
            }
            let batch: [Int64] = config.maxBatchSize > 0 ? [Int64(max(sample.batchSize, 1))] : []
            let shape = batch + input.dims
            guard shape.allSatisfy({ $0 >= 0 }) else { throw .invalidArgument("\(context): input '\(name)' needs fixed dims") }
            let count = Tensor.elementCount(of: shape)
            switch input.inputDataType {
            case .inputDataFile(let file)?:
                let url = directory.appendingPathComponent("warmup").appendingPathComponent(file)
                guard let data = try? Data(contentsOf: url) else {
                    throw .invalidArgument("\(context): input '\(name)': cannot read \(url.path)")
                }
                if let size = type.elementSize, data.count != count * size {
                    throw .invalidArgument("\(context): input '\(name)': \(url.path) holds \(data.count) bytes, shape \(shape) needs \(count * size)")
                }
                tensors.append(Tensor(name: name, dataType: type, shape: shape, data: data))
            case .randomData(true)?:
                if type == .bytes {
                    let strings = (0..<count).map { _ in Data((0..<8).map { _ in UInt8.random(in: 97...122, using: &generator) }) }
                    tensors.append(Tensor(name: name, shape: shape, strings: strings))
                } else {
                    tensors.append(Tensor(name: name, dataType: type, shape: shape, data: randomData(type, count: count, using: &generator)))
                }
            default:  // zero_data, or nothing said: zeros (empty strings for BYTES)
                if type == .bytes {
                    tensors.append(Tensor(name: name, shape: shape, strings: Array(repeating: Data(), count: count)))
                } else {
                    tensors.append(Tensor(name: name, dataType: type, shape: shape, data: Data(count: count * type.elementSize!)))
                }
            }
        }
        return tensors
    }

    /// Runs every sample on `instance`.
    static func run(on instance: any ModelInstance, config: ModelConfig, directory: URL) throws(TernError) {
        let outputs = config.output.map(\.name)
        for sample in config.modelWarmup {
            let inputs = try inputs(of: sample, config: config, directory: directory)
            for _ in 0..<max(Int(sample.count), 1) {
                do {
                    _ = try instance.execute(inputs: inputs, outputNames: outputs)
                } catch {
                    let message = (error as? TernError)?.message ?? "\(error)"
                    throw .invalidArgument("model '\(config.name)': model_warmup '\(sample.name)' failed: \(message)")
                }
            }
        }
    }

    /// Values that stay in range for the type: floats in [0, 1), small non-negative integers, bools.
    private static func randomData(_ type: DataType, count: Int, using generator: inout SystemRandomNumberGenerator) -> Data {
        switch type {
        case .fp32: return [Float]((0..<count).map { _ in Float.random(in: 0..<1, using: &generator) }).withUnsafeBytes { Data($0) }
        case .fp64: return [Double]((0..<count).map { _ in Double.random(in: 0..<1, using: &generator) }).withUnsafeBytes { Data($0) }
        case .fp16: return [Float16]((0..<count).map { _ in Float16(Float.random(in: 0..<1, using: &generator)) }).withUnsafeBytes { Data($0) }
        case .bool: return Data((0..<count).map { _ in UInt8.random(in: 0...1, using: &generator) })
        default:
            let size = type.elementSize ?? 1
            return Data((0..<(count * size)).map { index in index % size == 0 ? UInt8.random(in: 0...9, using: &generator) : 0 })
        }
    }
}
