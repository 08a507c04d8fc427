import Foundation
import SwiftProtobuf
import TernCore

/// The trainable layers of an ONNX model, read from its graph: a chain of dense layers (`Gemm`, or
/// `MatMul` then `Add` of a bias) with `Relu` between them, ending in logits (an optional final
/// `Softmax` is the model's output; training uses softmax cross-entropy on the logits). The
/// weights are the model's float initializers in graph order, so they line up with what the
/// coordinator sends and with `ONNXInitializers`.
public struct DenseNetwork: Sendable, Equatable {
    /// One step of the chain.
    public enum Layer: Sendable, Equatable {
        /// `y = x·W + b` (`transposed`: W is stored [out, in], as `Gemm` with `transB = 1`);
        /// `weight` and `bias` index the network's arrays.
        case dense(weight: Int, bias: Int?, transposed: Bool)
        /// `y = max(x, 0)`.
        case relu
    }

    /// The chain, input to logits.
    public var layers: [Layer]
    /// The initializers' names, in the order of `ParameterArray`s.
    public var names: [String]
    /// The initializers' shapes, in the same order.
    public var shapes: [[Int]]
    /// The width of the input.
    public var inputWidth: Int
    /// The number of classes.
    public var classes: Int

    /// Reads the chain from the ONNX model at `path`, with the initial weights; throws for an
    /// operator or layout it cannot train, naming it.
    public static func load(path: String) throws(TernError) -> (DenseNetwork, [ParameterArray]) {
        let model = try ONNXInitializers.model(path: path)
        let named = try ONNXInitializers.read(path: path)
        let index = Dictionary(named.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
        var layers: [Layer] = []
        var current = model.graph.input.first { !index.keys.contains($0.name) }?.name ?? ""
        var width: Int?
        var lastOut: Int?
        func outputs(_ weight: Int, transposed: Bool) throws(TernError) -> (Int, Int) {
            let shape = named[weight].array.shape
            guard shape.count == 2 else { throw .invalidArgument("\(path): weight \(named[weight].name) has shape \(shape), not a matrix") }
            return transposed ? (shape[1], shape[0]) : (shape[0], shape[1])
        }
        func checkBias(_ bias: Int?, width: Int) throws(TernError) {
            guard let bias else { return }
            let shape = named[bias].array.shape
            guard shape == [width] || (shape.count == 2 && shape[0] == 1 && shape[1] == width) else {
                throw .invalidArgument("\(path): bias \(named[bias].name) has shape \(shape) for a layer of \(width) outputs")
            }
        }
        var pendingMatMul: (weight: Int, output: String)?
        for node in model.graph.node {
            guard node.input.contains(current) || pendingMatMul.map({ node.input.contains($0.output) }) == true else { continue }
            switch node.opType {
            case "Gemm":
                let attributes = Dictionary(node.attribute.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
                if (attributes["transA"]?.i ?? 0) != 0 || (attributes["alpha"].map { $0.f != 1 } ?? false) || (attributes["beta"].map { $0.f != 1 } ?? false) {
                    throw .invalidArgument("\(path): Gemm \(node.name) with transA, alpha or beta other than the defaults cannot be trained")
                }
                guard node.input.count >= 2, let weight = index[node.input[1]] else {
                    throw .invalidArgument("\(path): Gemm \(node.name)'s weight is not an initializer (a frozen part of the graph cannot be trained)")
                }
                let transposed = (attributes["transB"]?.i ?? 0) != 0
                let bias = node.input.count >= 3 ? index[node.input[2]] : nil
                let (inputs, outs) = try outputs(weight, transposed: transposed)
                try checkBias(bias, width: outs)
                if width == nil { width = inputs }
                if let lastOut, lastOut != inputs { throw .invalidArgument("\(path): Gemm \(node.name) takes \(inputs) inputs after a layer of \(lastOut)") }
                lastOut = outs
                layers.append(.dense(weight: weight, bias: bias, transposed: transposed))
                current = node.output[0]
            case "MatMul":
                guard node.input.count == 2, let weight = index[node.input[1]], node.input[0] == current else {
                    throw .invalidArgument("\(path): MatMul \(node.name) needs the activations first and an initializer second")
                }
                let (inputs, outs) = try outputs(weight, transposed: false)
                if width == nil { width = inputs }
                if let lastOut, lastOut != inputs { throw .invalidArgument("\(path): MatMul \(node.name) takes \(inputs) inputs after a layer of \(lastOut)") }
                lastOut = outs
                pendingMatMul = (weight, node.output[0])
                layers.append(.dense(weight: weight, bias: nil, transposed: false))
                current = node.output[0]
            case "Add":
                guard let pending = pendingMatMul, node.input.contains(pending.output),
                      let bias = node.input.first(where: { $0 != pending.output }).flatMap({ index[$0] }) else {
                    throw .invalidArgument("\(path): Add \(node.name) is not a bias after a MatMul")
                }
                try checkBias(bias, width: named[pending.weight].array.shape[1])
                layers[layers.count - 1] = .dense(weight: pending.weight, bias: bias, transposed: false)
                pendingMatMul = nil
                current = node.output[0]
            case "Relu":
                layers.append(.relu)
                current = node.output[0]
            case "Softmax", "Identity", "Flatten":
                current = node.output[0]
            default:
                throw .invalidArgument("\(path): operator \(node.opType) (\(node.name)) is not one the trainer supports (Gemm, MatMul, Add, Relu, Softmax)")
            }
            if node.opType != "MatMul" { pendingMatMul = nil }
        }
        guard let width, let classes = lastOut, layers.contains(where: { if case .dense = $0 { return true } else { return false } }) else {
            throw .invalidArgument("\(path) has no dense layers to train")
        }
        let network = DenseNetwork(layers: layers, names: named.map(\.name), shapes: named.map(\.array.shape), inputWidth: width, classes: classes)
        return (network, named.map(\.array))
    }
}

/// A batch of rows as one row-major matrix.
struct Matrix {
    var rows: Int
    var columns: Int
    var values: [Double]

    init(rows: Int, columns: Int, values: [Double]) {
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    init(zeros rows: Int, _ columns: Int) {
        self.init(rows: rows, columns: columns, values: [Double](repeating: 0, count: rows * columns))
    }

    /// `self · B` where B is [k, n] (or, `transposed`, B is [n, k] and this is `self · Bᵀ`).
    func times(_ b: [Double], k: Int, n: Int, transposed: Bool) -> Matrix {
        var out = Matrix(zeros: rows, n)
        values.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { w in
                out.values.withUnsafeMutableBufferPointer { y in
                    for r in 0..<rows {
                        let row = r * k
                        let outRow = r * n
                        if transposed {
                            for j in 0..<n {
                                var sum = 0.0
                                let base = j * k
                                for i in 0..<k { sum += a[row + i] * w[base + i] }
                                y[outRow + j] = sum
                            }
                        } else {
                            for i in 0..<k {
                                let x = a[row + i]
                                if x == 0 { continue }
                                let base = i * n
                                for j in 0..<n { y[outRow + j] += x * w[base + j] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}
