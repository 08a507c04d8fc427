/// Checks of a config that need nothing but the config itself. Every message names the file and
/// the field, so a user can fix a hand-written config.pbtxt without guessing.
extension ModelConfig {
    /// Throws `invalidArgument` naming `file` and the offending field.
    public func validate(file: String) throws(TernError) {
        func fail(_ field: String, _ problem: String) -> TernError {
            .invalidArgument("\(file): \(field): \(problem)")
        }
        if name.isEmpty { throw fail("name", "must not be empty") }
        if maxBatchSize < 0 { throw fail("max_batch_size", "must be 0 (no batching) or positive, not \(maxBatchSize)") }

        try Self.validateTensors(
            input.map { ($0.name, $0.dataType, $0.dims, $0.hasReshape ? $0.reshape.shape : nil) },
            kind: "input", fail: fail)
        try Self.validateTensors(
            output.map { ($0.name, $0.dataType, $0.dims, $0.hasReshape ? $0.reshape.shape : nil) },
            kind: "output", fail: fail)

        if case .specific(let specific)? = versionPolicy.policyChoice {
            if specific.versions.isEmpty { throw fail("version_policy.specific.versions", "lists no version") }
            if let bad = specific.versions.first(where: { $0 <= 0 }) {
                throw fail("version_policy.specific.versions", "versions are positive integers, not \(bad)")
            }
        }
        if case .latest(let latest)? = versionPolicy.policyChoice, latest.numVersions == 0 {
            throw fail("version_policy.latest.num_versions", "must be at least 1")
        }
        for (i, group) in instanceGroup.enumerated() {
            if group.count < 0 { throw fail("instance_group[\(i)].count", "must not be negative, not \(group.count)") }
            if group.kind == .model {
                throw fail("instance_group[\(i)].kind", "KIND_MODEL is not supported by the onnxruntime backend")
            }
        }
        if case .dynamicBatching? = schedulingChoice {
            for size in dynamicBatching.preferredBatchSize where size <= 0 || (maxBatchSize > 0 && size > maxBatchSize) {
                throw fail(
                    "dynamic_batching.preferred_batch_size",
                    "\(size) must be between 1 and max_batch_size (\(maxBatchSize))")
            }
            if dynamicBatching.priorityLevels > 0,
                dynamicBatching.defaultPriorityLevel > dynamicBatching.priorityLevels
            {
                throw fail(
                    "dynamic_batching.default_priority_level",
                    "\(dynamicBatching.defaultPriorityLevel) exceeds priority_levels (\(dynamicBatching.priorityLevels))")
            }
        }
        for (i, warmup) in modelWarmup.enumerated() {
            if warmup.name.isEmpty { throw fail("model_warmup[\(i)].name", "must not be empty") }
            if maxBatchSize > 0, warmup.batchSize > maxBatchSize {
                throw fail("model_warmup[\(i)].batch_size", "\(warmup.batchSize) exceeds max_batch_size (\(maxBatchSize))")
            }
        }
        for (key, value) in parameters where key.hasPrefix("tern.") || Self.threadParameters.contains(key) {
            if Self.threadParameters.contains(key), Int(value.stringValue) == nil {
                throw fail("parameters[\(key)]", "expected an integer, not '\(value.stringValue)'")
            }
        }
    }

    /// `parameters` keys that the onnxruntime backend reads as thread counts (Triton's names).
    public static let threadParameters: Set<String> = ["intra_op_thread_count", "inter_op_thread_count"]

    private static func validateTensors(
        _ tensors: [(name: String, type: Inference_DataType, dims: [Int64], reshape: [Int64]?)],
        kind: String, fail: (String, String) -> TernError
    ) throws(TernError) {
        var seen: Set<String> = []
        for (i, tensor) in tensors.enumerated() {
            let field = "\(kind)[\(i)]" + (tensor.name.isEmpty ? "" : " '\(tensor.name)'")
            if tensor.name.isEmpty { throw fail("\(field).name", "must not be empty") }
            if !seen.insert(tensor.name).inserted { throw fail("\(field).name", "appears twice") }
            if DataType(configType: tensor.type) == nil {
                throw fail("\(field).data_type", "is missing or TYPE_INVALID")
            }
            if let bad = tensor.dims.first(where: { $0 < -1 }) {
                throw fail("\(field).dims", "dimensions are -1 (any size) or non-negative, not \(bad)")
            }
            if let reshape = tensor.reshape, !tensor.dims.contains(-1), !reshape.contains(-1),
                Tensor.elementCount(of: reshape) != Tensor.elementCount(of: tensor.dims)
            {
                throw fail("\(field).reshape", "shape \(reshape) does not hold the \(Tensor.elementCount(of: tensor.dims)) elements of dims \(tensor.dims)")
            }
        }
    }
}
