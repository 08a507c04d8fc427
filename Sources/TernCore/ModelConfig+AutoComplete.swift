/// Completing a config from the model file, as Triton's auto-complete does, and checking that a
/// config agrees with the model file.
extension ModelConfig {
    /// Batch size Triton's onnxruntime backend sets when a model can batch and the config is silent.
    public static let defaultMaxBatchSize: Int32 = 4

    /// Inputs the server feeds itself: sequence control inputs and implicit state inputs.
    public var serverSuppliedInputs: Set<String> {
        guard case .sequenceBatching(let sequencing)? = schedulingChoice else { return [] }
        return Set(sequencing.controlInput.map(\.name) + sequencing.state.map(\.inputName))
    }

    /// Outputs the server keeps as implicit state instead of returning them.
    public var stateOutputs: Set<String> {
        guard case .sequenceBatching(let sequencing)? = schedulingChoice else { return [] }
        return Set(sequencing.state.map(\.outputName))
    }

    /// Fills what the config leaves out from the model's declared inputs and outputs: missing
    /// inputs/outputs, their types and dims, and `max_batch_size` when every input and output has
    /// a variable first dimension (and the config sets no inputs or outputs of its own).
    public mutating func autoComplete(from signature: ModelSignature) {
        let supplied = serverSuppliedInputs, kept = stateOutputs
        let canBatch = !signature.inputs.isEmpty
            && (signature.inputs + signature.outputs).allSatisfy { ($0.shape.first ?? 0) == -1 }
        if maxBatchSize == 0, input.isEmpty, output.isEmpty, canBatch {
            maxBatchSize = Self.defaultMaxBatchSize
            if schedulingChoice == nil { dynamicBatching = Inference_ModelDynamicBatching() }
        }
        let batchDims = maxBatchSize > 0 ? 1 : 0
        for spec in signature.inputs where !supplied.contains(spec.name) {
            if let index = input.firstIndex(where: { $0.name == spec.name }) {
                if input[index].dataType == .typeInvalid { input[index].dataType = spec.dataType.configType }
                if input[index].dims.isEmpty, !input[index].hasReshape { input[index].dims = Array(spec.shape.dropFirst(batchDims)) }
            } else {
                var entry = Inference_ModelInput()
                entry.name = spec.name
                entry.dataType = spec.dataType.configType
                entry.dims = Array(spec.shape.dropFirst(batchDims))
                if entry.dims.isEmpty, batchDims == 1 {
                    // A [batch] tensor: Triton exposes it as [batch, 1] and reshapes to [batch].
                    entry.dims = [1]
                    entry.reshape = Inference_ModelTensorReshape()
                }
                input.append(entry)
            }
        }
        for spec in signature.outputs where !kept.contains(spec.name) {
            if let index = output.firstIndex(where: { $0.name == spec.name }) {
                if output[index].dataType == .typeInvalid { output[index].dataType = spec.dataType.configType }
                if output[index].dims.isEmpty, !output[index].hasReshape { output[index].dims = Array(spec.shape.dropFirst(batchDims)) }
            } else {
                var entry = Inference_ModelOutput()
                entry.name = spec.name
                entry.dataType = spec.dataType.configType
                entry.dims = Array(spec.shape.dropFirst(batchDims))
                if entry.dims.isEmpty, batchDims == 1 {
                    // A [batch] tensor: Triton exposes it as [batch, 1] and reshapes to [batch].
                    entry.dims = [1]
                    entry.reshape = Inference_ModelTensorReshape()
                }
                output.append(entry)
            }
        }
    }

    /// Checks the config against what the model file declares: every configured tensor exists with
    /// the same type and a compatible shape, and every required model input is configured.
    public func check(against signature: ModelSignature, file: String) throws(TernError) {
        func fail(_ field: String, _ problem: String) -> TernError {
            .invalidArgument("\(file): \(field): \(problem)")
        }
        let batch: [Int64] = maxBatchSize > 0 ? [-1] : []
        for (i, entry) in input.enumerated() {
            let field = "input[\(i)] '\(entry.name)'"
            guard let spec = signature.inputs.first(where: { $0.name == entry.name }) else {
                throw fail(field, "the model has no input of that name (it has \(signature.inputs.map(\.name)))")
            }
            try Self.check(
                field: field, type: entry.dataType, shape: batch + (entry.hasReshape ? entry.reshape.shape : entry.dims),
                against: spec, batched: maxBatchSize > 0, fail: fail)
        }
        for (i, entry) in output.enumerated() {
            let field = "output[\(i)] '\(entry.name)'"
            guard let spec = signature.outputs.first(where: { $0.name == entry.name }) else {
                throw fail(field, "the model has no output of that name (it has \(signature.outputs.map(\.name)))")
            }
            try Self.check(
                field: field, type: entry.dataType, shape: batch + (entry.hasReshape ? entry.reshape.shape : entry.dims),
                against: spec, batched: maxBatchSize > 0, fail: fail)
        }
        let supplied = serverSuppliedInputs
        for name in supplied where !signature.inputs.contains(where: { $0.name == name }) {
            throw fail("sequence_batching", "the model has no input '\(name)' for a control or state (it has \(signature.inputs.map(\.name)))")
        }
        for spec in signature.inputs where !input.contains(where: { $0.name == spec.name }) && !supplied.contains(spec.name) {
            throw fail("input", "the model's input '\(spec.name)' is not in the config")
        }
    }

    private static func check(
        field: String, type: Inference_DataType, shape: [Int64], against spec: TensorSpec, batched: Bool,
        fail: (String, String) -> TernError
    ) throws(TernError) {
        guard DataType(configType: type) == spec.dataType else {
            throw fail("\(field).data_type", "config says \(type), the model declares \(spec.dataType.configType)")
        }
        if batched, let first = spec.shape.first, first != -1 {
            throw fail(
                "max_batch_size",
                "the model's '\(spec.name)' has a fixed first dimension \(first), so it cannot batch; set max_batch_size: 0")
        }
        guard shape.count == spec.shape.count,
            zip(shape, spec.shape).allSatisfy({ $0 == $1 || $0 == -1 || $1 == -1 })
        else {
            throw fail(
                "\(field).dims",
                "config shape \(shape) (batch dimension included) does not match the model's \(spec.shape)")
        }
    }
}
