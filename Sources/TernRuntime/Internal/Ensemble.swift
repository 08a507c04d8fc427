import Foundation
import Logging
import Synchronization
import TernCore

/// An ensemble's steps as a checked DAG (Triton's `ensemble_scheduling`): every step input is an
/// ensemble input or exactly one step's output, every ensemble output is produced, no tensor is
/// produced twice, and there is no cycle.
struct EnsemblePlan: Sendable {
    struct Step: Sendable {
        var model: String
        /// nil: the highest ready version (`model_version: -1`, or left out).
        var version: Int64?
        /// (composing model's input name, ensemble tensor name)
        var inputs: [(modelInput: String, tensor: String)]
        /// (composing model's output name, ensemble tensor name)
        var outputs: [(modelOutput: String, tensor: String)]
    }

    var steps: [Step]

    init(config: ModelConfig, file: String) throws(TernError) {
        func fail(_ field: String, _ problem: String) -> TernError { .invalidArgument("\(file): \(field): \(problem)") }
        guard case .ensembleScheduling(let ensemble)? = config.schedulingChoice, !ensemble.step.isEmpty else {
            throw fail("ensemble_scheduling", "an ensemble needs ensemble_scheduling with at least one step")
        }
        var producer: [String: String] = [:]  // tensor → who produces it
        for input in config.input { producer[input.name] = "ensemble input" }
        steps = []
        for (i, raw) in ensemble.step.enumerated() {
            let field = "ensemble_scheduling.step[\(i)]"
            guard !raw.modelName.isEmpty else { throw fail("\(field).model_name", "must not be empty") }
            guard raw.modelName != config.name else { throw fail("\(field).model_name", "an ensemble cannot call itself") }
            guard raw.modelVersion >= -1 else {  // -1 or left out (0): the highest ready version
                throw fail("\(field).model_version", "must be -1 (latest) or a positive version, not \(raw.modelVersion)")
            }
            guard !raw.inputMap.isEmpty, !raw.outputMap.isEmpty else {
                throw fail(field, "needs an input_map and an output_map")
            }
            for (output, tensor) in raw.outputMap.sorted(by: { $0.key < $1.key }) {
                if let other = producer[tensor] {
                    throw fail("\(field).output_map['\(output)']", "tensor '\(tensor)' is already produced by \(other)")
                }
                producer[tensor] = "step \(i) ('\(raw.modelName)')"
            }
            steps.append(Step(
                model: raw.modelName, version: raw.modelVersion > 0 ? raw.modelVersion : nil,
                inputs: raw.inputMap.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                outputs: raw.outputMap.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }))
        }
        for (i, step) in steps.enumerated() {
            for (input, tensor) in step.inputs where producer[tensor] == nil {
                throw fail("ensemble_scheduling.step[\(i)].input_map['\(input)']", "tensor '\(tensor)' is neither an ensemble input nor any step's output")
            }
        }
        for output in config.output where producer[output.name] == nil || producer[output.name] == "ensemble input" {
            throw fail("output '\(output.name)'", "no step produces it (map a step output to '\(output.name)' in an output_map)")
        }
        // Kahn's algorithm: every step must become runnable.
        var available = Set(config.input.map(\.name))
        var remaining = Set(steps.indices)
        while !remaining.isEmpty {
            let ready = remaining.filter { steps[$0].inputs.allSatisfy { available.contains($0.tensor) } }
            guard !ready.isEmpty else {
                throw fail("ensemble_scheduling", "steps \(remaining.sorted()) wait on each other (a cycle)")
            }
            for i in ready { for output in steps[i].outputs { available.insert(output.tensor) } }
            remaining.subtract(ready)
        }
    }

    var composingModels: [String] { Array(Set(steps.map(\.model))).sorted() }
}

/// The engine's own backend for `platform: "ensemble"`: an instance runs the DAG by sending each
/// step to its composing model through the engine, as soon as the step's inputs exist, so
/// independent branches run in parallel on their models' instances. Intermediate tensors are
/// handed from step to step without copies (tensor data is shared, only names change) and are
/// never returned.
struct EnsembleBackend: Backend {
    let link: EngineLink
    var name: String { "ensemble" }
    var platforms: [String] { ["ensemble"] }
    var defaultModelFilename: String { "" }
    /// Ensemble requests that may run at once (each waits on a thread while its steps run).
    var defaultInstanceCount: Int? { 16 }

    func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        EnsembleInstance(name: config.name, plan: try EnsemblePlan(config: config, file: "model '\(config.name)'"), config: config, link: link)
    }
}

final class EnsembleInstance: ModelInstance {
    let name: String
    let plan: EnsemblePlan
    let signature: ModelSignature
    let link: EngineLink

    init(name: String, plan: EnsemblePlan, config: ModelConfig, link: EngineLink) {
        self.name = name
        self.plan = plan
        self.link = link
        let batch: [Int64] = config.maxBatchSize > 0 ? [-1] : []
        func spec(_ name: String, _ type: Inference_DataType, _ dims: [Int64]) -> TensorSpec {
            TensorSpec(name: name, dataType: DataType(configType: type) ?? .fp32, shape: batch + dims)
        }
        signature = ModelSignature(
            inputs: config.input.map { spec($0.name, $0.dataType, $0.dims) },
            outputs: config.output.map { spec($0.name, $0.dataType, $0.dims) })
    }

    private struct Run {
        var tensors: [String: Tensor]
        var failure: TernError?
    }

    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        guard let server = link.server else { throw TernError.unavailable("ensemble '\(name)': the server is shutting down") }
        for step in plan.steps where !server.isModelReady(step.model, version: step.version) {
            throw TernError.unavailable("ensemble '\(name)' is unavailable: composing model '\(step.model)'"
                + (step.version.map { " version \($0)" } ?? "") + " is not ready")
        }
        let state = Mutex(Run(tensors: Dictionary(inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })))
        let finished = DispatchSemaphore(value: 0)
        var pending = Array(plan.steps.indices)
        var running = 0
        while true {
            let (ready, failed) = state.withLock { run in
                (pending.filter { plan.steps[$0].inputs.allSatisfy { run.tensors[$0.tensor] != nil } }, run.failure != nil)
            }
            if !failed {
                pending.removeAll { ready.contains($0) }
                for index in ready {
                    running += 1
                    let step = plan.steps[index]
                    let request = state.withLock { run in
                        InferenceRequest(
                            modelName: step.model, modelVersion: step.version,
                            inputs: step.inputs.map { input in
                                var tensor = run.tensors[input.tensor]!
                                tensor.name = input.modelInput
                                return tensor
                            },
                            outputs: step.outputs.map { RequestedOutput(name: $0.modelOutput) })
                    }
                    server.submit(request, allowInline: false) { [name] result in
                        state.withLock { run in
                            switch result {
                            case .success(let response):
                                for output in step.outputs {
                                    guard var tensor = response.output(named: output.modelOutput) else {
                                        run.failure = run.failure ?? .internalError("ensemble '\(name)': '\(step.model)' returned no '\(output.modelOutput)'")
                                        continue
                                    }
                                    tensor.name = output.tensor
                                    run.tensors[output.tensor] = tensor
                                }
                            case .failure(let error):
                                run.failure = run.failure ?? TernError(error.code, "ensemble '\(name)' step '\(step.model)': \(error.message)")
                            }
                        }
                        finished.signal()
                    }
                }
            }
            if running == 0 { break }
            finished.wait()
            running -= 1
        }
        let run = state.withLock { $0 }
        if let failure = run.failure { throw failure }
        return try outputNames.map { name throws(TernError) in
            guard let tensor = run.tensors[name] else {
                throw .internalError("ensemble '\(self.name)': output '\(name)' was not produced")
            }
            return tensor
        }
    }
}
