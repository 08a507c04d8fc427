import CoreMetrics
import Foundation
import Logging
import Synchronization
import TernCore
import TernRuntime

/// Reads what an experiment records of an answer: confidence (the largest value of a row of a
/// probability output; rows averaged) and prediction (an integer or string output, or the
/// arg-max of the confidence output; rows joined with ',').
enum OutputReading {
    /// A prediction: one integer (most classifiers), or text (strings, several rows).
    enum Prediction: Equatable {
        case integer(Int64)
        case text(String)
    }

    static func read(_ response: InferenceResponse, confidenceOutput: String?, predictionOutput: String?) -> (Double?, Prediction?) {
        let probabilities = confidenceOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { ($0.dataType == .fp32 || $0.dataType == .fp64) && ($0.shape.last ?? 1) > 1 }
        var confidence: Double?
        var argmax: (first: Int, rest: [Int])?
        if let probabilities, let width = probabilities.shape.last.map(Int.init), width > 0 {
            let scanned: (sum: Double, first: Int, rest: [Int])?
            switch probabilities.dataType {
            case .fp32: scanned = maxima(probabilities.data, width: width, as: Float.self)
            case .fp64: scanned = maxima(probabilities.data, width: width, as: Double.self)
            default: scanned = nil
            }
            if let scanned {
                confidence = scanned.sum / Double(1 + scanned.rest.count)
                argmax = (scanned.first, scanned.rest)
            }
        }
        let predicted = predictionOutput.flatMap { response.output(named: $0) }
            ?? response.outputs.first { isLabelType($0.dataType) }
        if let predicted {
            if predicted.elementCount == 1, let value = integer(predicted) { return (confidence, .integer(value)) }
            if let text = strings(predicted) { return (confidence, .text(text.joined(separator: ","))) }
        }
        guard let argmax else { return (confidence, nil) }
        if argmax.rest.isEmpty { return (confidence, .integer(Int64(argmax.first))) }
        return (confidence, .text(([argmax.first] + argmax.rest).map(String.init).joined(separator: ",")))
    }

    /// Integer and string outputs hold labels.
    static func isLabelType(_ type: DataType) -> Bool {
        switch type {
        case .int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .uint64, .bytes: return true
        default: return false
        }
    }

    /// The value of a one-element integer tensor (nil for other types, or a uint64 beyond Int64).
    static func integer(_ tensor: Tensor) -> Int64? {
        func first<T: FixedWidthInteger>(_ type: T.Type) -> Int64? {
            guard tensor.data.count >= MemoryLayout<T>.size else { return nil }
            return tensor.data.withUnsafeBytes { Int64(exactly: $0.loadUnaligned(as: T.self)) }
        }
        switch tensor.dataType {
        case .int64: return first(Int64.self)
        case .int32: return first(Int32.self)
        case .int16: return first(Int16.self)
        case .int8: return first(Int8.self)
        case .uint8: return first(UInt8.self)
        case .uint16: return first(UInt16.self)
        case .uint32: return first(UInt32.self)
        case .uint64: return first(UInt64.self)
        default: return nil
        }
    }

    /// The sum of the rows' largest values, and the index of each row's largest value (the first
    /// row's apart: one row, the usual case, needs no array). Read in place; nil when there is
    /// not one full row.
    static func maxima<T: BinaryFloatingPoint>(_ data: Data, width: Int, as type: T.Type) -> (sum: Double, first: Int, rest: [Int])? {
        data.withUnsafeBytes { raw in
            let stride = MemoryLayout<T>.stride
            let rows = raw.count / stride / width
            guard rows > 0 else { return nil }
            func row(_ row: Int) -> (Double, Int) {
                var best = raw.loadUnaligned(fromByteOffset: row * width * stride, as: T.self), index = 0
                for column in 1..<max(width, 1) {
                    let value = raw.loadUnaligned(fromByteOffset: (row * width + column) * stride, as: T.self)
                    if value > best { (best, index) = (value, column) }
                }
                return (Double(best), index)
            }
            let (firstBest, first) = row(0)
            var sum = firstBest
            var rest: [Int] = []
            if rows > 1 {
                rest.reserveCapacity(rows - 1)
                for index in 1..<rows {
                    let (best, column) = row(index)
                    sum += best
                    rest.append(column)
                }
            }
            return (sum, first, rest)
        }
    }

    static func strings(_ tensor: Tensor) -> [String]? {
        switch tensor.dataType {
        case .int64: return (try? tensor.values(as: Int64.self))?.map { String($0) }
        case .int32: return (try? tensor.values(as: Int32.self))?.map { String($0) }
        case .int16: return (try? tensor.values(as: Int16.self))?.map { String($0) }
        case .int8: return (try? tensor.values(as: Int8.self))?.map { String($0) }
        case .uint8: return (try? tensor.values(as: UInt8.self))?.map { String($0) }
        case .uint16: return (try? tensor.values(as: UInt16.self))?.map { String($0) }
        case .uint32: return (try? tensor.values(as: UInt32.self))?.map { String($0) }
        case .uint64: return (try? tensor.values(as: UInt64.self))?.map { String($0) }
        case .bytes: return (try? tensor.strings())?.map { String(decoding: $0, as: UTF8.self) }
        default: return nil
        }
    }
}
