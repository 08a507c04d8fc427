import Foundation
import TernCore

/// How one local training run goes: Flower's usual `FitIns.config` keys.
public struct TrainingOptions: Sendable, Equatable {
    /// The optimisers.
    public enum Optimizer: String, Sendable, Equatable {
        /// Stochastic gradient descent, with `momentum` (PyTorch's form: v = μv + g, w -= lr·v).
        case sgd
        /// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8, bias-corrected).
        case adam
    }

    /// Passes over the local data (`local_epochs`).
    public var epochs = 1
    /// The step size (`learning_rate` or `lr`).
    public var learningRate = 0.01
    /// Examples per step (`batch_size`).
    public var batchSize = 32
    /// The optimiser (`optimizer`).
    public var optimizer: Optimizer = .sgd
    /// SGD's momentum (`momentum`).
    public var momentum = 0.0
    /// FedProx's μ (`proximal_mu`): adds (μ/2)·‖w − w_global‖² to the loss.
    public var proximalMu = 0.0
    /// Seeds the shuffling.
    public var seed: UInt64 = 0

    /// The defaults.
    public init() {}
}

/// Trains a `DenseNetwork` with softmax cross-entropy, in Swift over `Double`s. The arrays stay in
/// the network's order; gradients are exact (checked against finite differences and NumPy).
public struct Trainer: Sendable {
    /// The layers trained.
    public let network: DenseNetwork

    /// A trainer for `network`.
    public init(network: DenseNetwork) { self.network = network }

    /// Mean cross-entropy (plus the proximal term) of `batch` and its gradient for each array.
    public func lossAndGradients(
        weights: [ParameterArray], x: [Double], y: [Int], anchor: [ParameterArray]? = nil, proximalMu: Double = 0
    ) -> (loss: Double, gradients: [[Double]]) {
        let n = y.count
        var inputs: [Matrix] = []  // what each layer saw
        var activation = Matrix(rows: n, columns: network.inputWidth, values: x)
        for layer in network.layers {
            inputs.append(activation)
            activation = forward(layer, activation, weights)
        }
        // Softmax cross-entropy on the logits; dL/dlogits = (p - onehot) / n.
        var loss = 0.0
        var gradient = activation
        let classes = activation.columns
        for r in 0..<n {
            let row = r * classes
            var high = -Double.infinity
            for j in 0..<classes { high = max(high, activation.values[row + j]) }
            var total = 0.0
            for j in 0..<classes { total += Foundation.exp(activation.values[row + j] - high) }
            let logTotal = Foundation.log(total) + high
            loss -= activation.values[row + y[r]] - logTotal
            for j in 0..<classes {
                gradient.values[row + j] = (Foundation.exp(activation.values[row + j] - logTotal) - (j == y[r] ? 1 : 0)) / Double(n)
            }
        }
        loss /= Double(n)
        var gradients = weights.map { [Double](repeating: 0, count: $0.count) }
        for (index, layer) in network.layers.enumerated().reversed() {
            let input = inputs[index]
            switch layer {
            case .relu:
                for i in gradient.values.indices where input.values[i] <= 0 { gradient.values[i] = 0 }
            case .dense(let weight, let bias, let transposed):
                let w = weights[weight]
                let (inWidth, outWidth) = (input.columns, gradient.columns)
                var dW = [Double](repeating: 0, count: w.count)
                for r in 0..<n {
                    for i in 0..<inWidth {
                        let xv = input.values[r * inWidth + i]
                        if xv == 0 { continue }
                        for j in 0..<outWidth {
                            let g = gradient.values[r * outWidth + j]
                            if transposed { dW[j * inWidth + i] += g * xv } else { dW[i * outWidth + j] += xv * g }
                        }
                    }
                }
                gradients[weight] = dW
                if let bias {
                    var db = [Double](repeating: 0, count: outWidth)
                    for r in 0..<n { for j in 0..<outWidth { db[j] += gradient.values[r * outWidth + j] } }
                    gradients[bias] = db
                }
                if index > 0 {
                    gradient = transposed
                        ? gradient.times(w.values, k: outWidth, n: inWidth, transposed: false)
                        : gradient.times(w.values, k: outWidth, n: inWidth, transposed: true)
                }
            }
        }
        if let anchor, proximalMu > 0 {
            for (index, (w, w0)) in zip(weights, anchor).enumerated() {
                for k in 0..<w.count {
                    let d = w.values[k] - w0.values[k]
                    loss += proximalMu / 2 * d * d
                    gradients[index][k] += proximalMu * d
                }
            }
        }
        return (loss, gradients)
    }

    private func forward(_ layer: DenseNetwork.Layer, _ x: Matrix, _ weights: [ParameterArray]) -> Matrix {
        switch layer {
        case .relu:
            return Matrix(rows: x.rows, columns: x.columns, values: x.values.map { max($0, 0) })
        case .dense(let weight, let bias, let transposed):
            let w = weights[weight]
            let outWidth = transposed ? w.shape[0] : w.shape[1]
            var y = x.times(w.values, k: x.columns, n: outWidth, transposed: transposed)
            if let bias {
                let b = weights[bias].values
                for r in 0..<y.rows { for j in 0..<outWidth { y.values[r * outWidth + j] += b[j] } }
            }
            return y
        }
    }

    /// The logits for `x` (rows of the network's input width).
    public func logits(weights: [ParameterArray], x: [Double], rows: Int) -> [Double] {
        var activation = Matrix(rows: rows, columns: network.inputWidth, values: x)
        for layer in network.layers { activation = forward(layer, activation, weights) }
        return activation.values
    }

    /// Checks that `data` fits the network: its width and its labels' range.
    public func check(_ data: TrainingSet) throws(TernError) {
        guard data.width == network.inputWidth else {
            throw .invalidArgument("the data has \(data.width) features but the model takes \(network.inputWidth)")
        }
        if let label = data.labels.first(where: { $0 < 0 || $0 >= network.classes }) {
            throw .invalidArgument("label \(label) is outside the model's \(network.classes) classes")
        }
    }

    /// Checks that `weights` have the network's layout (the arrays its layers index, their shapes).
    public func check(weights: [ParameterArray]) throws(TernError) {
        guard weights.count == network.names.count else {
            throw .invalidArgument("\(weights.count) arrays where the model has \(network.names.count)")
        }
        for (index, (array, shape)) in zip(weights, network.shapes).enumerated() where array.shape != shape {
            throw .invalidArgument("array \(index) (\(network.names[index])) has shape \(array.shape) where the model has \(shape)")
        }
    }

    /// Mean cross-entropy and accuracy of `weights` on `data`.
    public func evaluate(weights: [ParameterArray], data: TrainingSet) throws(TernError) -> (loss: Double, accuracy: Double) {
        try check(data)
        try check(weights: weights)
        guard data.count > 0 else { return (0, 0) }
        var loss = 0.0
        var correct = 0
        var start = 0
        while start < data.count {
            let end = min(start + 1024, data.count)
            let (x, y) = data.batch(Array(start..<end))
            let logits = self.logits(weights: weights, x: x, rows: y.count)
            let classes = network.classes
            for r in 0..<y.count {
                let row = Array(logits[(r * classes)..<((r + 1) * classes)])
                let high = row.max() ?? 0
                let logTotal = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - high) }) + high
                loss -= row[y[r]] - logTotal
                if row.firstIndex(of: high) == y[r] { correct += 1 }
            }
            start = end
        }
        return (loss / Double(data.count), Double(correct) / Double(data.count))
    }

    /// Trains `weights` on `data` with `options`; returns the new weights and the mean loss of the last epoch.
    public func train(weights initial: [ParameterArray], data: TrainingSet, options: TrainingOptions) throws(TernError) -> (weights: [ParameterArray], loss: Double) {
        try check(data)
        try check(weights: initial)
        guard options.epochs >= 0, options.batchSize >= 1, options.learningRate.isFinite else {
            throw .invalidArgument("local_epochs must be >= 0, batch_size >= 1 and learning_rate finite")
        }
        var weights = initial
        var velocity = initial.map { [Double](repeating: 0, count: $0.count) }
        var second = velocity
        var step = 0
        var generator = SplitMix64(seed: options.seed)
        var lastLoss = 0.0
        for _ in 0..<options.epochs {
            var order = Array(0..<data.count)
            order.shuffle(using: &generator)
            var total = 0.0
            var start = 0
            while start < order.count {
                let indices = Array(order[start..<min(start + options.batchSize, order.count)])
                let (x, y) = data.batch(indices)
                let (loss, gradients) = lossAndGradients(weights: weights, x: x, y: y, anchor: initial, proximalMu: options.proximalMu)
                total += loss * Double(y.count)
                step += 1
                for index in weights.indices {
                    var values = weights[index].values
                    let g = gradients[index]
                    switch options.optimizer {
                    case .sgd:
                        for k in values.indices {
                            velocity[index][k] = options.momentum * velocity[index][k] + g[k]
                            values[k] -= options.learningRate * velocity[index][k]
                        }
                    case .adam:
                        let correction1 = 1 - Foundation.pow(0.9, Double(step))
                        let correction2 = 1 - Foundation.pow(0.999, Double(step))
                        for k in values.indices {
                            velocity[index][k] = 0.9 * velocity[index][k] + 0.1 * g[k]
                            second[index][k] = 0.999 * second[index][k] + 0.001 * g[k] * g[k]
                            let mHat = velocity[index][k] / correction1
                            let vHat = second[index][k] / correction2
                            values[k] -= options.learningRate * mHat / (vHat.squareRoot() + 1e-8)
                        }
                    }
                    weights[index] = weights[index].with(values: values)
                }
                start += options.batchSize
            }
            lastLoss = total / Double(max(data.count, 1))
        }
        return (weights, lastLoss)
    }
}

/// A small seeded generator (Steele, Lea and Flood's SplitMix64): the trainer's shuffles and the
/// coordinator's client sampling, repeatable from a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator that starts from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
