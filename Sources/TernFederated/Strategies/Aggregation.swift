import Foundation
import TernTraining

/// The element-wise rules behind the strategies, over `Double`s (Flower's `aggregate.py`).
public enum Aggregation {
    /// `sum(w_i * n_i) / sum(n_i)` per element (FedAvg); equal weights when every count is 0.
    public static func weightedMean(_ results: [FitResult]) -> FLWeights {
        let counted = results.reduce(0.0) { $0 + Double($1.numExamples) }
        let total = counted > 0 ? counted : Double(results.count)
        let template = results[0].weights
        return template.indices.map { layer in
            var sum = [Double](repeating: 0, count: template[layer].count)
            for result in results {
                let weight = counted > 0 ? Double(result.numExamples) : 1
                let values = result.weights[layer].values
                for index in sum.indices { sum[index] += values[index] * weight }
            }
            return template[layer].with(values: sum.map { $0 / total })
        }
    }

    /// Applies `rule` to the clients' values of each element of each array.
    public static func elementwise(_ clients: [FLWeights], _ rule: ([Double]) -> Double) -> FLWeights {
        let template = clients[0]
        return template.indices.map { layer in
            var column = [Double](repeating: 0, count: clients.count)
            let values = (0..<template[layer].count).map { element in
                for (client, weights) in clients.enumerated() { column[client] = weights[layer].values[element] }
                return rule(column)
            }
            return template[layer].with(values: values)
        }
    }

    /// NumPy's median: the middle value, or the mean of the two middle values.
    public static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The mean after removing `int(proportion * n)` values from each end (SciPy's `trim_mean`).
    public static func trimmedMean(_ values: [Double], proportionToCut: Double) -> Double {
        let sorted = values.sorted()
        let cut = Int(proportionToCut * Double(sorted.count))
        let kept = sorted[cut..<(sorted.count - cut)]
        return kept.reduce(0, +) / Double(kept.count)
    }

    /// Krum: each client's score is the sum of squared distances to its `n - f - 2` nearest others
    /// (at least one); with `keep == 0` the lowest-scored client's weights win, otherwise the
    /// `keep` lowest-scored are averaged by example count (Multi-Krum).
    public static func krum(_ results: [FitResult], malicious: Int, keep: Int) -> FLWeights {
        let flat = results.map { $0.weights.flatMap(\.values) }
        let n = flat.count
        var distances = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            for j in 0..<n where j != i {
                var sum = 0.0
                for k in flat[i].indices {
                    let d = flat[i][k] - flat[j][k]
                    sum += d * d
                }
                distances[i][j] = sum
            }
        }
        let closest = max(1, n - malicious - 2)
        // Flower drops the first entry of each sorted row (the client itself, at distance 0).
        let scores = distances.map { row in row.sorted().dropFirst().prefix(closest).reduce(0, +) }
        let order = scores.indices.sorted { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        if keep > 0 {
            return weightedMean(order.prefix(keep).map { results[$0] })
        }
        return results[order[0]].weights
    }

    /// -1, 0 or 1, as `np.sign`.
    static func sign(_ value: Double) -> Double { value > 0 ? 1 : (value < 0 ? -1 : 0) }
}
