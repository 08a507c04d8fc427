import Foundation
import Testing
import TernCore
@testable import TernTraining

/// The trainer's gradients against finite differences, and training that lowers the loss.
@Suite struct TrainerTests {
    /// x(4) → MatMul W1 [4, 5] + b1 → Relu → Gemm(transB) W2 [3, 5] + b2 → logits(3).
    static func network() -> (DenseNetwork, [ParameterArray]) {
        var generator = SplitMix64(seed: 11)
        func random(_ shape: [Int]) -> ParameterArray {
            ParameterArray(dataType: .fp64, shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Double.random(in: -1...1, using: &generator) })
        }
        let network = DenseNetwork(
            layers: [.dense(weight: 0, bias: 1, transposed: false), .relu, .dense(weight: 2, bias: 3, transposed: true)],
            names: ["W1", "b1", "W2", "b2"], shapes: [[4, 5], [5], [3, 5], [3]], inputWidth: 4, classes: 3)
        return (network, [random([4, 5]), random([5]), random([3, 5]), random([3])])
    }

    @Test func gradientsMatchFiniteDifferences() {
        let (network, weights) = Self.network()
        let trainer = Trainer(network: network)
        var generator = SplitMix64(seed: 5)
        let x = (0..<(6 * 4)).map { _ in Double.random(in: -2...2, using: &generator) }
        let y = [0, 1, 2, 1, 0, 2]
        let anchor = weights.map { $0.with(values: $0.values.map { $0 + 0.3 }) }
        let (_, gradients) = trainer.lossAndGradients(weights: weights, x: x, y: y, anchor: anchor, proximalMu: 0.7)
        let h = 1e-6
        var worst = 0.0
        for array in weights.indices {
            for k in 0..<weights[array].count {
                var plus = weights, minus = weights
                plus[array].values[k] += h
                minus[array].values[k] -= h
                let numeric = (trainer.lossAndGradients(weights: plus, x: x, y: y, anchor: anchor, proximalMu: 0.7).loss
                    - trainer.lossAndGradients(weights: minus, x: x, y: y, anchor: anchor, proximalMu: 0.7).loss) / (2 * h)
                worst = max(worst, abs(numeric - gradients[array][k]))
            }
        }
        #expect(worst < 1e-6, "largest difference \(worst)")
    }

    @Test func sgdAndAdamLowerTheLoss() throws {
        let (network, weights) = Self.network()
        let trainer = Trainer(network: network)
        var generator = SplitMix64(seed: 8)
        var features: [Double] = []
        var labels: [Int] = []
        for _ in 0..<90 {
            let label = Int.random(in: 0..<3, using: &generator)
            for f in 0..<4 { features.append(Double.random(in: -0.3...0.3, using: &generator) + (f == label ? 1.5 : 0)) }
            labels.append(label)
        }
        let data = TrainingSet(features: features, labels: labels, width: 4)
        let before = try trainer.evaluate(weights: weights, data: data)
        for optimizer in [TrainingOptions.Optimizer.sgd, .adam] {
            var options = TrainingOptions()
            options.epochs = 20
            options.learningRate = optimizer == .sgd ? 0.2 : 0.02
            options.momentum = 0.9
            options.optimizer = optimizer
            options.batchSize = 16
            let (trained, _) = try trainer.train(weights: weights, data: data, options: options)
            let after = try trainer.evaluate(weights: trained, data: data)
            #expect(after.loss < before.loss * 0.5 && after.accuracy > 0.9, "\(optimizer): \(before) -> \(after)")
        }
        var bad = TrainingOptions()
        bad.batchSize = 0
        #expect(throws: TernError.self) { try trainer.train(weights: weights, data: data, options: bad) }
        #expect(throws: TernError.self) {
            try trainer.train(weights: weights, data: TrainingSet(features: [1, 2, 3, 4], labels: [7], width: 4), options: TrainingOptions())
        }
    }

    @Test func csvRowsAndTheirErrors() throws {
        let set = try TrainingSet.csv("a,b,label\n1,2,0\n3,4.5,1\n", source: "t.csv")
        #expect(set.width == 2 && set.labels == [0, 1] && set.features == [1, 2, 3, 4.5])
        #expect(throws: TernError.self) { try TrainingSet.csv("1,2,0\n3,1\n", source: "t.csv") }
        #expect(throws: TernError.self) { try TrainingSet.csv("1,2,0.5\n", source: "t.csv") }
        #expect(throws: TernError.self) { try NPZArchive.arrays(Data("not a zip".utf8), source: "t.npz") }
    }
}

/// Malformed training files are errors, never traps.
@Suite struct TrainingInputTests {
    @Test func brokenArchivesAndShapesAreRefused() throws {
        // An end-of-directory record claiming entries far past the file, and one with a huge offset.
        var eocd = Data([0x50, 0x4B, 0x05, 0x06]) + Data(repeating: 0, count: 18)
        eocd[10] = 0xFF
        eocd[11] = 0x7F
        #expect(throws: TernError.self) { try NPZArchive.arrays(eocd, source: "e.npz") }
        var far = Data([0x50, 0x4B, 0x05, 0x06]) + Data(repeating: 0, count: 18)
        far[10] = 1
        far[16] = 0xFF
        far[17] = 0xFF
        far[18] = 0xFF
        far[19] = 0x7F
        #expect(throws: TernError.self) { try NPZArchive.arrays(far, source: "f.npz") }
        #expect(throws: TernError.self) { try NPZArchive.arrays(Data(), source: "empty.npz") }
        #expect(throws: TernError.self) { try TrainingSet.csv("1,2,1e300\n", source: "t.csv") }
        #expect(throws: TernError.self) { try TrainingSet.csv("1,inf,1\n", source: "t.csv") }
        let (network, weights) = TrainerTests.network()
        let trainer = Trainer(network: network)
        #expect(throws: TernError.self) { try trainer.evaluate(weights: weights, data: TrainingSet(features: [1, 2], labels: [0], width: 2)) }
        #expect(throws: TernError.self) { try trainer.evaluate(weights: Array(weights.prefix(2)), data: TrainingSet(features: [1, 2, 3, 4], labels: [0], width: 4)) }
        let wide = ParameterArray(dataType: .int8, shape: [3], values: [1e10, -1e10, .nan]).tensor(name: "t")
        #expect(try wide.values(as: Int8.self) == [127, -128, 0])
    }
}
