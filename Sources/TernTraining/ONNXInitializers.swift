import Foundation
import SwiftProtobuf
import TernCore

/// A model's weights read from an ONNX file: its floating-point initializers in the order the
/// graph lists them (integer initializers are shapes and indices, not weights). Only the fields
/// that hold weights are decoded; models with external data are refused with the reason.
public enum ONNXInitializers {
    /// The float initializers of the model at `path`, named, in graph order.
    public static func read(path: String) throws(TernError) -> [(name: String, array: ParameterArray)] {
        let model = try model(path: path)
        var out: [(name: String, array: ParameterArray)] = []
        for tensor in model.graph.initializer {
            guard let type = floatType(tensor.dataType) else { continue }
            if tensor.dataLocation == 1 {
                throw .invalidArgument("\(path): initializer \(tensor.name) keeps its data in an external file, which is not supported")
            }
            out.append((tensor.name, try array(tensor, type: type, source: path)))
        }
        return out
    }

    /// The decoded model file (the parts `onnx_weights.proto` names; the rest kept as unknown fields).
    static func model(path: String) throws(TernError) -> Onnx_ModelProto {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .invalidArgument("cannot read \(path): \(error.localizedDescription)")
        }
        do {
            return try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw .invalidArgument("\(path) is not an ONNX model: \(error)")
        }
    }

    /// The arrays of `read(path:)` alone.
    public static func weights(path: String) throws(TernError) -> [ParameterArray] {
        let named = try read(path: path)
        guard !named.isEmpty else { throw .invalidArgument("\(path) has no floating-point initializers to train") }
        return named.map(\.array)
    }

    /// Writes the ONNX model at `template` to `destination` with its floating-point initializers
    /// replaced, in order, by `weights` (same count and shapes; each keeps its element type, stored
    /// as raw little-endian data). Everything else in the file is kept as it was. The file is
    /// written to a temporary name first and renamed, so a reader never sees half of it.
    public static func write(_ weights: [ParameterArray], template: String, to destination: String) throws(TernError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: template))
        } catch {
            throw .invalidArgument("cannot read \(template): \(error.localizedDescription)")
        }
        var model: Onnx_ModelProto
        do {
            model = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw .invalidArgument("\(template) is not an ONNX model: \(error)")
        }
        var next = 0
        for index in model.graph.initializer.indices {
            let tensor = model.graph.initializer[index]
            guard let type = floatType(tensor.dataType) else { continue }
            guard next < weights.count else { throw .invalidArgument("\(template) has more float initializers than the \(weights.count) arrays given") }
            let array = weights[next]
            guard array.shape == tensor.dims.map({ Int($0) }) else {
                throw .invalidArgument("initializer \(tensor.name) has shape \(tensor.dims) but array \(next) has \(array.shape)")
            }
            var replaced = tensor
            replaced.floatData = []
            replaced.doubleData = []
            replaced.int32Data = []
            replaced.rawData = array.converted(to: type).tensor(name: tensor.name).data
            model.graph.initializer[index] = replaced
            next += 1
        }
        guard next == weights.count else { throw .invalidArgument("\(template) has \(next) float initializers but \(weights.count) arrays were given") }
        let bytes: Data
        do {
            bytes = try model.serializedBytes()
        } catch {
            throw .internalError("cannot encode the ONNX model: \(error)")
        }
        let target = URL(fileURLWithPath: destination)
        let temporary = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).\(UUID().uuidString).tmp")
        do {
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try bytes.write(to: temporary)
            // rename(2) replaces the destination in one step, whether or not it exists.
            guard Foundation.rename(temporary.path, target.path) == 0 else {
                throw TernError.internalError(String(cString: strerror(errno)))
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw .internalError("cannot write \(destination): \(error.localizedDescription)")
        }
    }

    /// ONNX's element types 1 (float), 10 (float16), 11 (double).
    private static func floatType(_ code: Int32) -> DataType? {
        switch code {
        case 1: return .fp32
        case 10: return .fp16
        case 11: return .fp64
        default: return nil
        }
    }

    private static func array(_ tensor: Onnx_TensorProto, type: DataType, source: String) throws(TernError) -> ParameterArray {
        guard tensor.dims.allSatisfy({ $0 >= 0 }), let count = Tensor.checkedElementCount(of: tensor.dims), count <= 1 << 34 else {
            throw .invalidArgument("\(source): initializer \(tensor.name) has dimensions \(tensor.dims), which are negative or too large")
        }
        let shape = tensor.dims.map { Int($0) }
        let values: [Double]
        if tensor.hasRawData {
            let decoded = Tensor(name: tensor.name, dataType: type, shape: tensor.dims, data: tensor.rawData)
            do {
                try decoded.validateByteSize()
            } catch {
                throw .invalidArgument("\(source): initializer \(tensor.name): \(error.message)")
            }
            values = try ParameterArray(tensor: decoded).values
        } else {
            switch type {
            case .fp64: values = tensor.doubleData
            case .fp16: values = tensor.int32Data.map { Double(Float16(bitPattern: UInt16(truncatingIfNeeded: $0))) }
            default: values = tensor.floatData.map { Double($0) }
            }
        }
        guard values.count == count else {
            throw .invalidArgument("\(source): initializer \(tensor.name) has \(values.count) values for shape \(shape)")
        }
        return ParameterArray(dataType: type, shape: shape, values: values)
    }
}

/// Weights on disk: one `.npy` per array, `0.npy`, `1.npy`, ... in order.
public enum WeightsFiles {
    /// Writes `weights` into `directory` (created if needed); each file is written whole or not at all.
    public static func write(_ weights: [ParameterArray], to directory: String) throws(TernError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (index, array) in weights.enumerated() {
                try array.npy().write(to: URL(fileURLWithPath: directory).appendingPathComponent("\(index).npy"), options: .atomic)
            }
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("cannot write the weights to \(directory): \(error.localizedDescription)")
        }
    }
}
