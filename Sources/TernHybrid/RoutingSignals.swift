import Foundation
import TernCore
import TernRuntime

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

/// Remote latency as a function of the request's size: `ms = base + bytes × perByte`, where
/// `base` is the round trip plus the remote's service time and `perByte` the inverse of the
/// observed upload bandwidth. Fitted by least squares with exponential forgetting, so it follows
/// a link whose delay or bandwidth changes.
struct LinkModel: Sendable, Equatable {
    let weight: Double
    private(set) var samples = 0
    private var meanBytes = 0.0
    private var meanMs = 0.0
    private var varianceBytes = 0.0
    private var covariance = 0.0

    init(weight: Double = 0.1) { self.weight = weight }

    mutating func add(bytes: Double, ms: Double) {
        samples += 1
        guard samples > 1 else {
            meanBytes = bytes
            meanMs = ms
            return
        }
        // A request size seen only a few times cannot tell bandwidth apart from delay; a
        // faster start (1/n) until there are 1/weight samples.
        let w = max(weight, 1 / Double(samples))
        let dx = bytes - meanBytes, dy = ms - meanMs
        meanBytes += w * dx
        meanMs += w * dy
        varianceBytes = (1 - w) * (varianceBytes + w * dx * dx)
        covariance = (1 - w) * (covariance + w * dx * dy)
    }

    /// Milliseconds per byte (0 until request sizes have varied enough to tell).
    var msPerByte: Double {
        guard varianceBytes > 1 else { return 0 }
        return max(covariance / varianceBytes, 0)
    }

    /// Expected milliseconds for a request of `bytes`; nil before the first sample.
    func estimate(bytes: Double) -> Double? {
        guard samples > 0 else { return nil }
        return max(meanMs + msPerByte * (bytes - meanBytes), 0)
    }

    /// Round trip plus remote service time, in ms (the fitted value at 0 bytes).
    var baseMs: Double? { samples > 0 ? max(meanMs - msPerByte * meanBytes, 0) : nil }
}

/// The local route's expected latency from the local model's queue and its measured compute
/// time per batch size (the latency policy's edge estimate).
enum LocalEstimate {
    /// - Parameters:
    ///   - occupancy: the local model's queue and instances now (nil: not a batched model).
    ///   - computeMs: mean execution time by batch size, as the model's statistics report it.
    ///   - fallback: the route's observed latency, used when nothing better is known.
    static func ms(occupancy: ModelOccupancy?, computeMs: [Int: Double], fallback: Double?) -> Double? {
        guard let occupancy, !computeMs.isEmpty else { return fallback }
        let limit = max(occupancy.maxBatchSize, 1)
        let instances = max(occupancy.instances, 1)
        if occupancy.queued == 0, occupancy.busyInstances < instances {
            return execution(rows: 1, computeMs)
        }
        // Waves of batches ahead of this request (it joins the last one), plus on average half
        // of the executions running now when every instance is busy.
        let rows = occupancy.queued + 1
        let waves = (rows + instances * limit - 1) / (instances * limit)
        let batch = min(rows, limit)
        let each = execution(rows: batch, computeMs)
        let running = occupancy.busyInstances >= instances ? 0.5 * execution(rows: limit, computeMs) : 0
        return Double(waves) * each + running
    }

    /// Execution time of a batch of `rows`: measured for that size, or scaled from the nearest
    /// measured size (linearly up, never below the smaller size's time).
    static func execution(rows: Int, _ computeMs: [Int: Double]) -> Double {
        if let exact = computeMs[rows] { return exact }
        let nearest = computeMs.keys.min { abs($0 - rows) < abs($1 - rows) }!
        let ms = computeMs[nearest]!
        return nearest < rows ? ms * Double(rows) / Double(nearest) : ms
    }
}
