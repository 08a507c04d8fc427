import Foundation
import TernCore

/// The measurements the routing policies decide on, as pure functions.
enum RoutingSignals {
    enum ConfidenceMeasure: String, Sendable {
        /// The largest probability of a row (BranchyNet's softmax confidence).
        case max
        /// The largest minus the second largest.
        case margin
        /// 1 − normalised entropy: 1 for a one-hot row, 0 for a uniform one.
        case entropy
    }

    /// Confidence of each row of a probability (or score) output; scores are softmaxed first when
    /// they are not already a distribution.
    static func confidence(_ tensor: Tensor, rows: Int, measure: ConfidenceMeasure) throws(TernError) -> [Double] {
        let values: [Double]
        switch tensor.dataType {
        case .fp32: values = try tensor.values(as: Float.self).map(Double.init)
        case .fp64: values = try tensor.values(as: Double.self)
        default: throw .invalidArgument("confidence output '\(tensor.name)' must be FP32 or FP64, not \(tensor.dataType.protocolName)")
        }
        guard rows > 0, values.count % rows == 0, values.count / rows >= 2 else {
            throw .invalidArgument("confidence output '\(tensor.name)' needs at least two classes per row")
        }
        let width = values.count / rows
        return (0..<rows).map { row in
            var p = Array(values[(row * width)..<((row + 1) * width)])
            let sum = p.reduce(0, +)
            if p.contains(where: { $0 < 0 }) || abs(sum - 1) > 1e-3 {
                let top = p.max()!
                let exps = p.map { Foundation.exp($0 - top) }
                let total = exps.reduce(0, +)
                p = exps.map { $0 / total }
            }
            switch measure {
            case .max: return p.max()!
            case .margin:
                let sorted = p.sorted(by: >)
                return sorted[0] - sorted[1]
            case .entropy:
                let h = -p.reduce(0) { $0 + ($1 > 0 ? $1 * Foundation.log($1) : 0) }
                return 1 - h / Foundation.log(Double(width))
            }
        }
    }

    /// The seed's complexity estimate of an input — a heuristic: the variance of its values
    /// (busy images and unusual feature vectors vary more) times log₂ of its element count.
    static func complexity(_ tensor: Tensor) -> Double {
        let values: [Double]
        switch tensor.dataType {
        case .fp32: values = ((try? tensor.values(as: Float.self)) ?? []).map(Double.init)
        case .fp64: values = (try? tensor.values(as: Double.self)) ?? []
        case .uint8: values = ((try? tensor.values(as: UInt8.self)) ?? []).map(Double.init)
        default: return 0
        }
        guard values.count > 1 else { return 0 }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        return variance * Foundation.log2(Double(values.count))
    }
}

/// An exponentially weighted moving average (of latencies, in ms).
struct EWMA: Sendable, Equatable {
    var value: Double?
    let weight: Double

    init(weight: Double = 0.2) { self.weight = weight }

    mutating func add(_ sample: Double) {
        value = value.map { $0 + weight * (sample - $0) } ?? sample
    }
}
