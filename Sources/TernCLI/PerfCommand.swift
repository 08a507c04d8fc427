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

    /// `--paired-with-direct`: each network mode at each concurrency against direct ONNX Runtime
    /// calls (as many at once as the model has instances), in alternating slices.
    /// `--paired-with-model M`: against the same calls, at the same concurrency, to model M.
    private func runPaired(selected: [Mode], request: InferenceRequest, local: LocalModel?, warmup: Duration) async throws {
        guard requestRate == nil, requestRateSchedule == nil else { throw ValidationError("paired runs measure closed loops only") }
        guard pairs >= 2, sliceSeconds > 0 else { throw ValidationError("--pairs must be at least 2 and --slice-seconds positive") }
        guard pairedWithDirect != (pairedModel != nil) else { throw ValidationError("pick one of --paired-with-direct and --paired-with-model") }
        var direct: LoadGenerator.BlockingWorker? = nil
        var instances = 0
        if pairedWithDirect {
            guard let local else { throw ValidationError("--paired-with-direct needs --model-repository (for the direct calls)") }
            let config = try local.server.modelConfig(model)
            instances = max(1, config.instanceGroup.reduce(0) { $0 + Int(max($1.count, 1)) })
            let outputs = config.output.map(\.name)
            let inputs = request.inputs
            let model = self.model
            // A session of its own for each direct thread, as each of the server's instances has one.
            direct = {
                let instance = try local.directInstance(model: model)
                return { _ = try instance.execute(inputs: inputs, outputNames: outputs) }
            }
        } else if sharedMemory == .system {
            throw ValidationError("--paired-with-model sends tensors on the socket (no --shared-memory)")
        }
        let slice = Duration.milliseconds(Int64(sliceSeconds * 1000))
        let baseName = pairedModel.map { "model \($0)" } ?? "direct ONNX Runtime"
        let settle = Duration.milliseconds(Int64((settleSeconds ?? (serverPID == nil ? 0 : 0.25)) * 1000))
        let pid = serverPID
        if pid != nil, pairedWithDirect {
            throw ValidationError("--server-pid compares the server's CPU on two served sides: use it with --paired-with-model")
        }
        if let pid, ProcessCPU.seconds(pid: pid) == nil { throw ValidationError("--server-pid \(pid): no such process here (its /proc entry is needed)") }
        let cpuTime: (() -> Double?)? = pid.map { pid in { ProcessCPU.seconds(pid: pid) } }
        var csv = "mode,concurrency,direct_concurrency,served_per_second,direct_per_second,ratio_median,ratio_mean,ratio_ci95,pairs,errors,served_p50_us,served_p99_us,served_cpu_us,base_cpu_us\n"
        print("model \(model), batch \(batchSize), \(pairs) pairs of \(sliceSeconds)s slices per point, served against \(baseName)")
        for mode in selected where mode.overNetwork {
            var baseRequest = request
            if let pairedModel { baseRequest.modelName = pairedModel }
            let base = try direct ?? blockingWorker(mode, request: baseRequest, placed: nil)
            guard let base else { throw ValidationError("\(mode.rawValue) has no network worker") }
            let points = try concurrencies()
            let placed = sharedMemory == .system
                ? try await PerfSharedMemory.setUp(mode: mode, command: self, request: request, slots: points.max() ?? 1) : nil
            do {
                guard let served = try blockingWorker(mode, request: request, placed: placed) else {
                    throw ValidationError("\(mode.rawValue) has no network worker")
                }
                for concurrency in points {
                    let k = direct == nil ? concurrency : min(concurrency, instances)
                    let result = try PairedRun.run(
                        servedWorkers: concurrency, directWorkers: k, slice: slice, pairs: pairs, warmup: warmup, settle: settle, cpuTime: cpuTime,
                        served: served, direct: base)
                    let (mean, half) = result.meanRatio
                    print(String(
                        format: "%@ c=%-3d served %8.1f/s (p50 %llu us, p99 %llu us)  %@(%d) %8.1f/s  ratio median %.3f  mean %.3f ± %.3f (95%% CI, %d pairs)  errors %d",
                        mode.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0) as NSString, concurrency, result.served,
                        result.servedLatency.valueAtPercentile(50), result.servedLatency.valueAtPercentile(99), (pairedModel ?? "direct") as NSString,
                        k, result.direct, result.medianRatio, mean, half, result.pairs.count, result.errors))
                    if let cpu = result.cpuMicroseconds {
                        print(String(format: "  server CPU per call: served %.1f us, %@ %.1f us (%.3f)", cpu.served, (pairedModel ?? "direct") as NSString,
                                     cpu.direct, cpu.served / max(cpu.direct, 1e-9)))
                    }
                    if let error = result.firstError { print("  first error: \(error)") }
                    let cpu = result.cpuMicroseconds
                    csv += String(
                        format: "%@,%d,%d,%.2f,%.2f,%.4f,%.4f,%.4f,%d,%d,%llu,%llu,%@,%@\n", mode.rawValue as NSString, concurrency, k, result.served,
                        result.direct, result.medianRatio, mean, half, result.pairs.count, result.errors,
                        result.servedLatency.valueAtPercentile(50), result.servedLatency.valueAtPercentile(99),
                        (cpu.map { String(format: "%.2f", $0.served) } ?? "") as NSString, (cpu.map { String(format: "%.2f", $0.direct) } ?? "") as NSString)
                }
            } catch {
                await placed?.tearDown()
                throw error
            }
            await placed?.tearDown()
        }
        if let csvPath { try csv.write(toFile: csvPath, atomically: true, encoding: .utf8) }
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

    private func workerScope(_ mode: Mode, request: InferenceRequest, local: LocalModel?) throws -> LoadGenerator.WorkerScope {
        switch mode {
        case .direct:
            guard let local else { throw ValidationError("--protocol direct needs --model-repository") }
            let instance = try local.directInstance(model: model)
            let outputs = try local.server.modelConfig(model).output.map(\.name)
            let inputs = request.inputs
            return { loop in await loop { _ = try instance.execute(inputs: inputs, outputNames: outputs) } }
        case .inProcess:
            guard let local else { throw ValidationError("--protocol in-process needs --model-repository") }
            let server = local.server
            return { loop in await loop { _ = try await server.infer(request) } }
        case .httpBinary, .httpJSON, .grpc:
            throw ValidationError("\(mode.rawValue) runs on blocking workers")
        }
    }

    /// Network modes: one thread and one connection per worker, the request encoded once (once
    /// per worker with shared memory: each worker's outputs have a slot of their own).
    private func blockingWorker(_ mode: Mode, request: InferenceRequest, placed: PerfSharedMemory?) throws -> LoadGenerator.BlockingWorker? {
        let host = self.host
        let slots = SlotCounter()
        switch mode {
        case .direct, .inProcess:
            return nil
        case .httpBinary, .httpJSON:
            let binary = mode == .httpBinary
            let encode: @Sendable (InferenceRequest, [String: SharedMemoryReference]) throws -> ([UInt8], [(String, String)]) = { request, inputs in
                let (body, headerLength) = try KServeHTTPEncoding.requestBody(request, binary: binary, sharedMemoryInputs: inputs)
                let headers = headerLength.map { [("Inference-Header-Content-Length", String($0)), ("Content-Type", "application/octet-stream")] }
                    ?? [("Content-Type", "application/json")]
                return (Array(body.readableBytesView), headers)
            }
            let (bytes, headers) = try encode(request, [:])
            let path = "/v2/models/\(request.modelName)/infer"
            let port = httpPort
            return {
                let (bytes, headers) = try placed.map { try encode($0.request(slot: slots.next()), $0.inputs) } ?? (bytes, headers)
                let client = try KServeHTTPClient.BlockingCaller(host: host, port: port, path: path, headers: headers, body: bytes, freshIDs: request.id == KServeHTTPClient.BlockingCaller.idPlaceholder)
                return {
                    let (status, errorBody) = try client.roundTrip()
                    guard status == 200 else { throw WireCallError("HTTP \(status): \(errorBody ?? "")") }
                }
            }
        case .grpc:
            let message = try KServeGRPCClient.serializedInferRequest(request)
            let port = grpcPort
            return {
                let bytes = try placed.map { try $0.grpcMessage(slot: slots.next()) } ?? message
                let client = try KServeGRPCClient.BlockingCaller(host: host, port: port, method: "/inference.GRPCInferenceService/ModelInfer", message: bytes)
                return { try client.call() }
            }
        }
    }
}

/// The model loaded in this process, for the direct and in-process modes.
struct LocalModel: Sendable {
    let server: InferenceServer
    let backend: ONNXRuntimeBackend
    let repository: URL

    static func load(model: String, repository: String?, needed: Bool, library: String?, logger: Logger) async throws -> LocalModel? {
        guard needed, let repository else { return nil }
        let backend = try ONNXRuntimeBackend(locator: ORTLibraryLocator(explicitPath: library), logger: logger)
        let url = URL(fileURLWithPath: repository)
        let server = InferenceServer(
            configuration: ServerConfiguration(repositoryPath: url, controlMode: .explicit, startupModels: [model]),
            backends: [backend], logger: logger)
        await server.start()
        guard server.isModelReady(model) else { throw TernError.notFound("model '\(model)' did not load from \(repository)") }
        return LocalModel(server: server, backend: backend, repository: url)
    }

    /// A fresh ONNX Runtime session of the model with the engine's own settings, called directly.
    func directInstance(model: String) throws -> any ModelInstance {
        let config = try server.modelConfig(model)
        let version = try server.modelMetadata(model).versions.last ?? "1"
        let file = repository.appendingPathComponent("\(model)/\(version)/\(config.defaultModelFilename.isEmpty ? backend.defaultModelFilename : config.defaultModelFilename)")
        let placement = InferenceServer.placements(for: config, cpuCores: server.configuration.cpuCores)[0]
        return try backend.makeInstance(modelPath: file, config: config, instance: placement, logger: server.logger)
    }
}

/// Hands out worker slots 0, 1, 2, ... (from any thread).
final class SlotCounter: Sendable {
    private let counter = Atomic(0)
    func next() -> Int { counter.add(1, ordering: .relaxed).oldValue }
}

/// `tern perf --shared-memory system`: the inputs written once into a region every call reads,
/// and a region with `slots` × outputs places of `--output-shared-memory-size` bytes, both
/// registered with the server over the protocol being measured and removed afterwards.
struct PerfSharedMemory: Sendable {
    let mode: PerfCommand.Mode
    let host: String
    let port: Int
    let names: (input: String, output: String)
    let inputRegion: ClientSharedMemory
    let outputRegion: ClientSharedMemory
    let base: InferenceRequest
    let inputs: [String: SharedMemoryReference]
    let outputs: [String]
    let outputSize: Int
    let slots: Int

    static func setUp(mode: PerfCommand.Mode, command: PerfCommand, request: InferenceRequest, slots: Int) async throws -> PerfSharedMemory {
        let port = mode == .grpc ? command.grpcPort : command.httpPort
        let outputs = try await outputNames(mode: mode, host: command.host, port: port, model: command.model)
        let prefix = "tern-perf-\(getpid())-\(mode.rawValue)"
        let (inputBytes, offsets) = ClientSharedMemory.layout(request.inputs)
        let inputRegion = try ClientSharedMemory(key: "/\(prefix)-in", byteSize: inputBytes)
        var inputs: [String: SharedMemoryReference] = [:]
        for (tensor, offset) in zip(request.inputs, offsets) {
            inputRegion.write(tensor, at: offset)
            inputs[tensor.name] = SharedMemoryReference(region: "\(prefix)-in", byteSize: tensor.data.count, offset: offset)
        }
        let size = command.outputSharedMemorySize
        guard size > 0 else { throw ValidationError("--output-shared-memory-size must be positive") }
        let outputRegion = try ClientSharedMemory(key: "/\(prefix)-out", byteSize: max(1, slots * outputs.count) * size)
        let placed = PerfSharedMemory(
            mode: mode, host: command.host, port: port, names: ("\(prefix)-in", "\(prefix)-out"), inputRegion: inputRegion,
            outputRegion: outputRegion, base: request, inputs: inputs, outputs: outputs, outputSize: size, slots: max(1, slots))
        try await placed.register(placed.names.input, inputRegion)
        do {
            try await placed.register(placed.names.output, outputRegion)
        } catch {
            await placed.tearDown()  // the server must not keep the input region mapped
            throw error
        }
        return placed
    }

    /// The request with every output placed in `slot`'s share of the output region.
    func request(slot: Int) -> InferenceRequest {
        var request = base
        let first = (slot % slots) * outputs.count
        request.outputs = outputs.enumerated().map { index, name in
            RequestedOutput(name: name, parameters: SharedMemoryReference(region: names.output, byteSize: outputSize, offset: (first + index) * outputSize).parameters)
        }
        return request
    }

    func grpcMessage(slot: Int) throws -> [UInt8] {
        try KServeGRPCClient.serializedInferRequest(request(slot: slot), sharedMemoryInputs: inputs)
    }

    private func register(_ name: String, _ region: ClientSharedMemory) async throws {
        if mode == .grpc {
            try await KServeGRPCClient.with(host: host, port: port) {
                try await $0.registerSystemSharedMemory(name: name, key: region.key, byteSize: UInt64(region.bytes.count))
            }
            return
        }
        let body = ByteBuffer(data: try JSONSerialization.data(withJSONObject: ["key": region.key, "offset": 0, "byte_size": region.bytes.count]))
        let reply = try await KServeHTTPClient(host: host, port: port).send(
            .POST, "/v2/systemsharedmemory/region/\(name)/register", headers: [("Content-Type", "application/json")], body: body)
        guard reply.status == 200 else {
            throw TernError.invalidArgument("registering shared memory '\(name)' failed: HTTP \(reply.status) \(reply.text)")
        }
    }

    /// Unregisters both regions (the objects are unlinked when the last copy of this goes).
    func tearDown() async {
        for name in [names.input, names.output] {
            if mode == .grpc {
                try? await KServeGRPCClient.with(host: host, port: port) { try await $0.unregisterSystemSharedMemory(name: name) }
            } else {
                _ = try? await KServeHTTPClient(host: host, port: port).send(.POST, "/v2/systemsharedmemory/region/\(name)/unregister")
            }
        }
    }

    private static func outputNames(mode: PerfCommand.Mode, host: String, port: Int, model: String) async throws -> [String] {
        if mode == .grpc {
            return try await KServeGRPCClient.with(host: host, port: port) { try await $0.signature(model: model) }.outputs.map(\.name)
        }
        return try await KServeHTTPClient(host: host, port: port).signature(model: model).outputs.map(\.name)
    }
}
