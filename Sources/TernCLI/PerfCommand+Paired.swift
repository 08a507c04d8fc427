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

/// Paired runs: slices of served calls alternated with direct ONNX Runtime calls or calls to
/// another served model.
extension PerfCommand {
    /// `--paired-with-direct`: each network mode at each concurrency against direct ONNX Runtime
    /// calls (as many at once as the model has instances), in alternating slices.
    /// `--paired-with-model M`: against the same calls, at the same concurrency, to model M.
    func runPaired(selected: [Mode], request: InferenceRequest, local: LocalModel?, warmup: Duration) async throws {
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
}
