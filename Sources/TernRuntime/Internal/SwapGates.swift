import Foundation
import TernCore

/// The validation gates a new version must pass before traffic moves to it (hot-swap), read from
/// the candidate's config `parameters`:
///
/// - `tern.gate.latency_p95_ms`: p95 latency of the candidate on the gate data ≤ this budget;
/// - `tern.gate.latency_ratio`: candidate p95 ≤ ratio × the serving version's p95, measured in the
///   same run on the same data;
/// - `tern.gate.accuracy_min`: accuracy on the model's labelled validation set ≥ this (0–1);
/// - `tern.gate.agreement_min`: share of validation rows where candidate and serving version give
///   the same label ≥ this (needs no labels);
/// - `tern.gate.memory_mb`: the candidate's load grew the process by at most this many MB.
///
/// The validation set ships with the model: `<model>/validation/<input>.npy` per input (first
/// dimension = rows) and `labels.npy` (integer labels). The label of a row is the output named by
/// `tern.gate.label_output` (default: the first output): its value when it has one element per row,
/// else the index of its largest element. Latency uses the first validation row, or zeros when
/// there is no validation set; `tern.gate.samples` requests (default 30) per version.
struct SwapGates: Sendable {
    var latencyP95Ms: Double?
    var latencyRatio: Double?
    var accuracyMin: Double?
    var agreementMin: Double?
    var memoryMB: Double?
    var samples = 30
    var labelOutput: String?

    init(config: ModelConfig) throws(TernError) {
        func number(_ key: String) throws(TernError) -> Double? {
            guard let text = config.parameters["tern.gate." + key]?.stringValue else { return nil }
            guard let value = Double(text), value >= 0 else {
                throw .invalidArgument("model '\(config.name)': parameter tern.gate.\(key) must be a non-negative number, got '\(text)'")
            }
            return value
        }
        latencyP95Ms = try number("latency_p95_ms")
        latencyRatio = try number("latency_ratio")
        accuracyMin = try number("accuracy_min")
        agreementMin = try number("agreement_min")
        memoryMB = try number("memory_mb")
        if let samples = try number("samples") { self.samples = max(Int(samples), 1) }
        labelOutput = config.parameters["tern.gate.label_output"]?.stringValue
    }

    var isEmpty: Bool { latencyP95Ms == nil && latencyRatio == nil && accuracyMin == nil && agreementMin == nil && memoryMB == nil }

    /// Runs every configured gate; `current` is the version serving now (nil on a first load).
    func run(candidate: ModelVersionRunner, current: ModelVersionRunner?, grownBytes: UInt64, directory: URL) async -> [GateResult] {
        var results: [GateResult] = []
        if let memoryMB {
            let grown = Double(grownBytes) / 1_048_576
            results.append(GateResult(
                name: "memory", passed: grown <= memoryMB, measured: grown, threshold: memoryMB,
                detail: String(format: "load grew the process by %.1f MB (budget %.1f MB)", grown, memoryMB)))
        }
        let validation: ValidationSet?
        do {
            validation = try ValidationSet.load(directory: directory.appendingPathComponent("validation"), config: candidate.config)
        } catch {
            return results + [GateResult(name: "validation set", passed: false, measured: 0, threshold: 0, detail: error.message)]
        }
        if latencyP95Ms != nil || latencyRatio != nil {
            do throws(TernError) {
                let sample: [Tensor]
                if let validation { sample = try validation.rows(0..<1, config: candidate.config) } else { sample = try Self.zeroInputs(candidate.config) }
                let candidateP95 = try await Self.p95(candidate, inputs: sample, samples: samples)
                if let budget = latencyP95Ms {
                    results.append(GateResult(
                        name: "latency", passed: candidateP95 <= budget, measured: candidateP95, threshold: budget,
                        detail: String(format: "p95 %.2f ms (budget %.2f ms)", candidateP95, budget)))
                }
                if let ratio = latencyRatio, let current {
                    let currentP95 = try await Self.p95(current, inputs: sample, samples: samples)
                    let limit = currentP95 * ratio
                    results.append(GateResult(
                        name: "latency ratio", passed: candidateP95 <= limit, measured: candidateP95, threshold: limit,
                        detail: String(format: "p95 %.2f ms vs serving %.2f ms × %.2f", candidateP95, currentP95, ratio)))
                }
            } catch {
                results.append(GateResult(name: "latency", passed: false, measured: 0, threshold: latencyP95Ms ?? 0, detail: error.message))
            }
        }
        if accuracyMin != nil || (agreementMin != nil && current != nil) {
            guard let validation else {
                let needed = accuracyMin != nil ? "accuracy" : "agreement"
                return results + [GateResult(
                    name: needed, passed: false, measured: 0, threshold: accuracyMin ?? agreementMin ?? 0,
                    detail: "no validation set: put <input>.npy files (and labels.npy) in \(directory.path)/validation/")]
            }
            do throws(TernError) {
                let predicted = try await labels(of: candidate, on: validation)
                if let minimum = accuracyMin {
                    guard let truth = validation.labels else {
                        throw .invalidArgument("the accuracy gate needs validation/labels.npy")
                    }
                    let accuracy = Double(zip(predicted, truth).filter { $0 == $1 }.count) / Double(max(truth.count, 1))
                    results.append(GateResult(
                        name: "accuracy", passed: accuracy >= minimum, measured: accuracy, threshold: minimum,
                        detail: String(format: "accuracy %.4f on %d labelled rows (minimum %.4f)", accuracy, truth.count, minimum)))
                }
                if let minimum = agreementMin, let current {
                    let served = try await labels(of: current, on: validation)
                    let agreement = Double(zip(predicted, served).filter { $0 == $1 }.count) / Double(max(served.count, 1))
                    results.append(GateResult(
                        name: "agreement", passed: agreement >= minimum, measured: agreement, threshold: minimum,
                        detail: String(format: "agrees with the serving version on %.4f of %d rows (minimum %.4f)", agreement, served.count, minimum)))
                }
            } catch {
                results.append(GateResult(name: accuracyMin != nil ? "accuracy" : "agreement", passed: false, measured: 0,
                                          threshold: accuracyMin ?? agreementMin ?? 0, detail: error.message))
            }
        }
        return results
    }

    /// p95 of `samples` sequential requests, in milliseconds.
    static func p95(_ runner: ModelVersionRunner, inputs: [Tensor], samples: Int) async throws(TernError) -> Double {
        var latencies: [Double] = []
        for _ in 0..<samples {
            let start = ContinuousClock.now
            _ = try await runner.infer(InferenceRequest(modelName: runner.name, modelVersion: runner.version, inputs: inputs))
            latencies.append((ContinuousClock.now - start).milliseconds)
        }
        latencies.sort()
        return latencies[min(latencies.count - 1, Int((Double(latencies.count) * 0.95).rounded(.up)) - 1)]
    }

    /// The label of each validation row as the runner predicts it.
    func labels(of runner: ModelVersionRunner, on validation: ValidationSet) async throws(TernError) -> [Int64] {
        let config = runner.config
        let outputName = labelOutput ?? config.output.first?.name ?? runner.signature.outputs.first?.name ?? ""
        let chunk = config.maxBatchSize > 0 ? Int(config.maxBatchSize) : 1
        var labels: [Int64] = []
        var start = 0
        while start < validation.count {
            let end = min(start + chunk, validation.count)
            let response = try await runner.infer(InferenceRequest(
                modelName: runner.name, modelVersion: runner.version, inputs: try validation.rows(start..<end, config: config),
                outputs: [RequestedOutput(name: outputName)]))
            guard let output = response.output(named: outputName) else {
                throw .invalidArgument("label output '\(outputName)' is not an output of version \(runner.version)")
            }
            labels += try Self.rowLabels(output, rows: end - start)
            start = end
        }
        return labels
    }

    /// One label per row: the value itself, or the index of the row's largest element.
    static func rowLabels(_ tensor: Tensor, rows: Int) throws(TernError) -> [Int64] {
        let values: [Double]
        switch tensor.dataType {
        case .fp32: values = try tensor.values(as: Float.self).map(Double.init)
        case .fp64: values = try tensor.values(as: Double.self)
        case .int64: values = try tensor.values(as: Int64.self).map(Double.init)
        case .int32: values = try tensor.values(as: Int32.self).map(Double.init)
        case .uint8: values = try tensor.values(as: UInt8.self).map(Double.init)
        case .bool: values = try tensor.values(as: Bool.self).map { $0 ? 1 : 0 }
        default: throw .invalidArgument("label output '\(tensor.name)' is \(tensor.dataType.protocolName): use a numeric output")
        }
        guard rows > 0, values.count % rows == 0 else {
            throw .invalidArgument("label output '\(tensor.name)' has \(values.count) elements for \(rows) rows")
        }
        let width = values.count / rows
        return (0..<rows).map { row in
            let slice = values[(row * width)..<((row + 1) * width)]
            if width == 1 { return Int64(slice.first!) }
            return Int64(slice.indices.max { slice[$0] < slice[$1] }! - row * width)
        }
    }

    /// Zeros for every input (batch of one), for the latency gate without a validation set.
    static func zeroInputs(_ config: ModelConfig) throws(TernError) -> [Tensor] {
        try config.input.map { input throws(TernError) in
            guard let type = DataType(configType: input.dataType), let size = type.elementSize else {
                throw .invalidArgument("the latency gate needs a validation set for input '\(input.name)' (\(input.dataType))")
            }
            let shape = (config.maxBatchSize > 0 ? [Int64(1)] : []) + input.dims
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw .invalidArgument("the latency gate needs a validation set: input '\(input.name)' has variable dims \(input.dims)")
            }
            return Tensor(name: input.name, dataType: type, shape: shape, data: Data(count: Tensor.elementCount(of: shape) * size))
        }
    }
}

/// A model's labelled validation set: one tensor per input with rows along the first dimension.
struct ValidationSet: Sendable {
    var inputs: [Tensor]
    var labels: [Int64]?
    var count: Int

    /// nil when the folder does not exist.
    static func load(directory: URL, config: ModelConfig) throws(TernError) -> ValidationSet? {
        guard FileManager.default.fileExists(atPath: directory.path) else { return nil }
        var inputs: [Tensor] = []
        for input in config.input {
            let file = directory.appendingPathComponent(input.name + ".npy").path
            guard FileManager.default.fileExists(atPath: file) else {
                throw .invalidArgument("validation set: \(file) is missing (one .npy per input)")
            }
            inputs.append(try NumpyFile.read(file, name: input.name))
        }
        guard let rows = inputs.first?.shape.first, rows > 0, inputs.allSatisfy({ $0.shape.first == rows }) else {
            throw .invalidArgument("validation set in \(directory.path): every input needs the same number of rows (first dimension)")
        }
        var labels: [Int64]?
        let labelFile = directory.appendingPathComponent("labels.npy").path
        if FileManager.default.fileExists(atPath: labelFile) {
            let tensor = try NumpyFile.read(labelFile, name: "labels")
            labels = try SwapGates.rowLabels(tensor, rows: Int(rows))
        }
        return ValidationSet(inputs: inputs, labels: labels, count: Int(rows))
    }

    /// Rows `range` of every input, shaped for a request (without the row dimension when the
    /// model does not batch).
    func rows(_ range: Range<Int>, config: ModelConfig) throws(TernError) -> [Tensor] {
        try inputs.map { tensor throws(TernError) in
            guard tensor.dataType.elementSize != nil else {
                throw .invalidArgument("validation set: BYTES inputs are not supported ('\(tensor.name)')")
            }
            let rowBytes = tensor.data.count / count
            let slice = tensor.data.subdata(in: (range.lowerBound * rowBytes)..<(range.upperBound * rowBytes))
            var shape = tensor.shape
            if config.maxBatchSize > 0 { shape[0] = Int64(range.count) } else { shape.removeFirst() }
            return Tensor(name: tensor.name, dataType: tensor.dataType, shape: shape, data: slice)
        }
    }
}
