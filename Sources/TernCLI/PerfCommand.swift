import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization
import TernCore
import TernClient
import TernGRPC
import TernHTTP
import TernONNXRuntime
import TernRuntime

/// `tern perf`: a load generator in the spirit of Triton's perf_analyzer. Measures one model over
/// the in-process API, ONNX Runtime called directly, HTTP (binary and JSON) and gRPC, at a sweep of
/// concurrencies or a fixed request rate, and prints throughput and latency percentiles.
struct PerfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perf", abstract: "Measure throughput and latency of a model, in-process and over the network.")

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case direct, inProcess = "in-process", httpBinary = "http-binary", httpJSON = "http-json", grpc

        var overNetwork: Bool { self == .httpBinary || self == .httpJSON || self == .grpc }
    }

    enum SharedMemoryKind: String, ExpressibleByArgument { case none, system }

    @Option(name: [.customShort("m"), .customLong("model")]) var model: String
    @Option(name: .customLong("protocol"), help: "direct | in-process | http-binary | http-json | grpc (repeatable; default: all that apply)")
    var modes: [Mode] = []
    @Option(name: .customLong("host")) var host: String = "127.0.0.1"
    @Option(name: .customLong("http-port")) var httpPort: Int = 8000
    @Option(name: .customLong("grpc-port")) var grpcPort: Int = 8001
    @Option(name: .customLong("model-repository"), help: "Load the model in this process for the direct and in-process modes.")
    var modelRepository: String?
    @Option(name: [.customShort("b"), .customLong("batch-size")]) var batchSize: Int = 1
    @Option(name: .customLong("concurrency-range"), help: "start:end:step: concurrencies start, start+step, ... up to end (as perf_analyzer)")
    var concurrencyRange: String = "1"
    @Option(name: .customLong("request-rate"), help: "Requests per second (open loop) instead of a concurrency sweep.")
    var requestRate: Double?
    @Option(name: .customLong("max-outstanding"), help: "Workers sending at --request-rate.") var maxOutstanding: Int = 16
    @Option(name: .customLong("request-rate-schedule"), help: "RATE:SECONDS,RATE:SECONDS,... an open-loop trace of rates one after another (network protocols); the measurement lasts the whole trace.")
    var requestRateSchedule: String?

    func rateSchedule() throws -> [(rate: Double, seconds: Double)] {
        guard let requestRateSchedule else { return [] }
        return try requestRateSchedule.split(separator: ",").map { phase in
            let parts = phase.split(separator: ":").compactMap { Double($0) }
            guard parts.count == 2, parts[0] > 0, parts[1] > 0 else {
                throw ValidationError("--request-rate-schedule: expected RATE:SECONDS pairs, not '\(phase)'")
            }
            return (parts[0], parts[1])
        }
    }
    @Option(name: .customLong("input-data"), help: "random | zero | FILE.json") var inputData: String = "random"
    @Option(name: .customLong("shape"), help: "NAME:d1,d2,... the shape of an input with variable dimensions, without the batch dimension (as perf_analyzer; repeatable)")
    var shapes: [String] = []
    @Option(name: .customLong("warmup-seconds")) var warmupSeconds: Double = 1
    @Option(name: .customLong("measurement-seconds")) var measurementSeconds: Double = 3
    @Option(name: .customLong("csv"), help: "Also write the table to this CSV file.") var csvPath: String?
    @Option(name: .customLong("grpc-connections"), help: "gRPC: above this concurrency, calls share this many connections as HTTP/2 streams.")
    var grpcConnections: Int = 4
    @Option(name: .customLong("onnxruntime-library")) var onnxRuntimeLibrary: String?
    @Option(name: .customLong("shared-memory"), help: "none | system: the network modes pass inputs and outputs through POSIX shared memory registered with the server (client and server on one machine), as perf_analyzer's option does")
    var sharedMemory: SharedMemoryKind = .none
    @Option(name: .customLong("output-shared-memory-size"), help: "Bytes of shared memory for each output of each call in flight (as perf_analyzer).")
    var outputSharedMemorySize: Int = 102_400
    @Flag(name: .customLong("paired-with-direct"), help: "Alternate short slices of served calls with ONNX Runtime called directly in this process (needs --model-repository) and report the ratio of each pair: resolves a few percent on a machine whose speed drifts.")
    var pairedWithDirect = false
    @Option(name: .customLong("paired-with-model"), help: "As --paired-with-direct, against the same calls to this other served model (an experiment against its control model, say).")
    var pairedModel: String?
    @Option(name: .customLong("slice-seconds"), help: "--paired-with-*: length of each slice.") var sliceSeconds: Double = 0.5
    @Option(name: .customLong("pairs"), help: "--paired-with-*: slice pairs per point.") var pairs: Int = 20
    @Option(name: .customLong("server-pid"), help: "--paired-with-model: also report this (local) server process's CPU time per call on each side.")
    var serverPID: Int32?
    @Option(name: .customLong("request-ids"), help: "none | random: HTTP calls carry a fresh random 32-character id each (as clients that set their own ids), or none.")
    var requestIDs: String = "none"
    @Option(name: .customLong("settle-seconds"), help: "--paired-with-*: idle time after each slice drains, so that work the server defers is counted in its slice (default 0, or 0.25 with --server-pid).")
    var settleSeconds: Double?

    func concurrencies() throws -> [Int] {
        let parts = concurrencyRange.split(separator: ":").compactMap { Int($0) }
        guard let start = parts.first, start >= 1 else { throw ValidationError("--concurrency-range: start:end:step with positive integers") }
        let end = parts.count > 1 ? parts[1] : start
        let step = parts.count > 2 ? max(parts[2], 1) : 1
        return Array(stride(from: start, through: end, by: step))
    }

    func validate() throws {
        switch requestIDs {
        case "none": break
        case "random":
            guard !modes.isEmpty, modes.allSatisfy({ $0 == .httpBinary || $0 == .httpJSON }) else {
                throw ValidationError("--request-ids random: with --protocol http-binary or http-json")
            }
        default: throw ValidationError("--request-ids: none or random, not '\(requestIDs)'")
        }
    }

    func run() async throws {
        var logger = Logger(label: "tern-perf")
        logger.logLevel = .warning
        var selected = modes
        if selected.isEmpty {
            selected = (modelRepository == nil ? [] : [.direct, .inProcess]) + [.httpBinary, .httpJSON, .grpc]
        }
        let local = try await LocalModel.load(
            model: model, repository: modelRepository, needed: pairedWithDirect || selected.contains(.direct) || selected.contains(.inProcess),
            library: onnxRuntimeLibrary, logger: logger)
        let (modelInputs, maxBatch) = try await signature(local: local, overGRPC: !selected.contains(.httpBinary) && !selected.contains(.httpJSON))
        for option in shapes where !modelInputs.contains(where: { option.hasPrefix($0.name + ":") }) {
            throw ValidationError("--shape \(option): the model has no such input (inputs: \(modelInputs.map(\.name).joined(separator: ", ")))")
        }
        let specs = try modelInputs.map { spec in try shaped(spec, batched: maxBatch > 0) }
        let inputs: [Tensor]
        switch inputData {
        case "random": inputs = InputData.random(for: specs, batchSize: batchSize, batched: maxBatch > 0)
        case "zero": inputs = InputData.random(for: specs, batchSize: batchSize, batched: maxBatch > 0, zero: true)
        default: inputs = try InputData.fromJSONFile(inputData, specs: specs)
        }
        var request = InferenceRequest(modelName: model, inputs: inputs)
        if requestIDs == "random" { request.id = KServeHTTPClient.BlockingCaller.idPlaceholder }
        let warmup = Duration.milliseconds(Int64(warmupSeconds * 1000))
        let measure = Duration.milliseconds(Int64(measurementSeconds * 1000))

        let schedule = try rateSchedule()
        if !schedule.isEmpty, selected.contains(where: { $0 == .direct || $0 == .inProcess }) {
            throw ValidationError("--request-rate-schedule drives the network protocols only")
        }
        if pairedWithDirect || pairedModel != nil {
            return try await runPaired(selected: selected, request: request, local: local, warmup: warmup)
        }
        var rows: [PerfReport.Row] = []
        print("model \(model), batch \(batchSize), \(requestRate.map { "rate \($0)/s" } ?? "concurrency \(concurrencyRange)"), \(measurementSeconds)s per point")
        for mode in selected {
            let points = requestRate == nil && schedule.isEmpty ? try concurrencies() : [maxOutstanding]
            let placed = sharedMemory == .system && mode.overNetwork
                ? try await PerfSharedMemory.setUp(mode: mode, command: self, request: request, slots: points.max() ?? 1) : nil
            let blocking = try blockingWorker(mode, request: request, placed: placed)
            let scope = blocking == nil ? try workerScope(mode, request: request, local: local) : nil
            do {
                for concurrency in points {
                    let result: LoadGenerator.Result
                    if mode == .grpc, requestRate == nil, schedule.isEmpty, concurrency > grpcConnections {
                        // Many calls: a few connections with several streams each (h2load -m); with
                        // shared memory, each connection's calls share its slot of output space.
                        let slots = SlotCounter()
                        let message = placed == nil ? try KServeGRPCClient.serializedInferRequest(request) : []
                        let (host, port) = (self.host, grpcPort)
                        result = try await LoadGenerator.multiplexed(
                            concurrency: concurrency, connections: grpcConnections, warmup: warmup, measure: measure
                        ) {
                            let bytes = try placed.map { try $0.grpcMessage(slot: slots.next()) } ?? message
                            return try KServeGRPCClient.BlockingCaller(host: host, port: port, method: "/inference.GRPCInferenceService/ModelInfer", message: bytes)
                        }
                    } else if let blocking {
                        result = try await LoadGenerator.blocking(
                            workers: concurrency, rate: requestRate, schedule: schedule, warmup: warmup, measure: measure, makeWorker: blocking)
                    } else if let scope, let requestRate {
                        result = try await LoadGenerator.fixedRate(rate: requestRate, maxOutstanding: concurrency, warmup: warmup, measure: measure, makeWorker: scope)
                    } else if let scope {
                        result = try await LoadGenerator.closedLoop(concurrency: concurrency, warmup: warmup, measure: measure, makeWorker: scope)
                    } else {
                        continue
                    }
                    let row = PerfReport.Row(mode: mode.rawValue, concurrency: concurrency, batch: batchSize, result: result)
                    print(PerfReport.line(row))
                    if let error = result.firstError { print("  first error: \(error)") }
                    rows.append(row)
                }
            } catch {
                await placed?.tearDown()
                throw error
            }
            await placed?.tearDown()
        }
        print("")
        print(PerfReport.table(rows))
        if let csvPath { try PerfReport.csv(rows).write(toFile: csvPath, atomically: true, encoding: .utf8) }
    }

    /// `spec` with the shape given by `--shape` for it, if any.
    private func shaped(_ spec: TensorSpec, batched: Bool) throws -> TensorSpec {
        guard let option = shapes.first(where: { $0.hasPrefix(spec.name + ":") }) else { return spec }
        let text = option.dropFirst(spec.name.count + 1)
        let dims = text.split(separator: ",").map { Int64($0.trimmingCharacters(in: .whitespaces)) }
        guard !dims.isEmpty, dims.allSatisfy({ ($0 ?? -1) >= 0 }) else {
            throw ValidationError("--shape \(option): expected NAME:d1,d2,... with non-negative integers")
        }
        var copy = spec
        copy.shape = (batched ? [-1] : []) + dims.map { $0! }
        return copy
    }

    /// The model's inputs and max_batch_size: from the local engine, else from the server over
    /// the protocol being measured.
    private func signature(local: LocalModel?, overGRPC: Bool) async throws -> ([TensorSpec], Int) {
        if let local {
            let config = try local.server.modelConfig(model)
            let batch: [Int64] = config.maxBatchSize > 0 ? [-1] : []
            return (config.input.map { TensorSpec(name: $0.name, dataType: DataType(configType: $0.dataType)!, shape: batch + $0.dims) }, Int(config.maxBatchSize))
        }
        if overGRPC {
            return try await KServeGRPCClient.with(host: host, port: grpcPort) { client in
                (try await client.signature(model: model).inputs, try await client.maxBatchSize(model: model))
            }
        }
        let client = try KServeHTTPClient(host: host, port: httpPort)
        let inputs = try await client.signature(model: model).inputs
        let config = try await client.config(model: model)
        return (inputs, (config["max_batch_size"] as? NSNumber)?.intValue ?? 0)
    }
}
