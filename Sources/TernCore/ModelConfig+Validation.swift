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
        try validateLimits(file: file)
        try validatePaths(file: file)

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

    /// Largest `max_batch_size` accepted (Triton's field is an int32; beyond this a batch of even
    /// one-byte items is larger than an edge device's memory).
    public static let maxBatchSizeLimit: Int32 = 1 << 20
    /// Largest warm-up sample or sequence state (the server allocates these itself at load).
    public static let maxServerAllocatedBytes = 1 << 30
    /// Most dimensions a tensor may declare.
    public static let maxRank = 64
    /// Largest dimension accepted (an int32, as ONNX shapes usually are).
    public static let maxDimension: Int64 = Int64(Int32.max)

    /// Checks that every file the config names (`default_model_filename`, `label_filename`,
    /// warm-up `input_data_file`) is a relative path inside the model's folder: no absolute path,
    /// no `..`, no NUL. Runs before any file is opened, so a config (or a load request's config
    /// override) can neither load nor probe a file elsewhere.
    public func validatePaths(file: String) throws(TernError) {
        func check(_ path: String, _ field: String) throws(TernError) {
            guard !path.isEmpty else { return }
            let components = path.split(separator: "/", omittingEmptySubsequences: false)
            if path.hasPrefix("/") || path.utf8.contains(0) || components.contains(where: { $0 == ".." }) {
                throw .invalidArgument("\(file): \(field): '\(path)' must name a file inside the model's folder (a relative path without '..')")
            }
        }
        try check(defaultModelFilename, "default_model_filename")
        for (i, output) in output.enumerated() { try check(output.labelFilename, "output[\(i)].label_filename") }
        for (i, warmup) in modelWarmup.enumerated() {
            for (name, input) in warmup.inputs {
                if case .inputDataFile(let path)? = input.inputDataType {
                    try check(path, "model_warmup[\(i)].inputs[\(name)].input_data_file")
                }
            }
        }
    }

    /// Checks sizes a config may declare before anything is allocated for them: `max_batch_size`,
    /// dimensions and their product (a batch of the largest item must have a byte size that fits),
    /// and instance counts.
    public func validateLimits(file: String) throws(TernError) {
        func fail(_ field: String, _ problem: String) -> TernError { .invalidArgument("\(file): \(field): \(problem)") }
        if maxBatchSize > Self.maxBatchSizeLimit {
            throw fail("max_batch_size", "\(maxBatchSize) is larger than the limit of \(Self.maxBatchSizeLimit)")
        }
        let batchDims: [Int64] = maxBatchSize > 0 ? [Int64(maxBatchSize)] : []
        // Every shape the engine allocates for: model tensors (a full batch of them), warm-up
        // samples (their batch size) and sequence state.
        var tensors = input.map { ("input", $0.name, $0.dataType, [($0.dims, "dims"), ($0.hasReshape ? $0.reshape.shape : [], "reshape.shape")], batchDims) }
            + output.map { ("output", $0.name, $0.dataType, [($0.dims, "dims"), ($0.hasReshape ? $0.reshape.shape : [], "reshape.shape")], batchDims) }
        for (i, warmup) in modelWarmup.enumerated() {
            if warmup.batchSize > UInt32(Self.maxBatchSizeLimit) {
                throw fail("model_warmup[\(i)].batch_size", "\(warmup.batchSize) is larger than the limit of \(Self.maxBatchSizeLimit)")
            }
            for (name, sample) in warmup.inputs {
                tensors.append(("model_warmup[\(i)] input", name, sample.dataType, [(sample.dims, "dims")], [Int64(max(warmup.batchSize, 1))]))
            }
        }
        if case .sequenceBatching? = schedulingChoice {
            for state in sequenceBatching.state {
                tensors.append(("sequence_batching.state", state.inputName, state.dataType, [(state.dims, "dims")], batchDims))
            }
        }
        for (kind, name, type, shapes, batch) in tensors {
            for (shape, field) in shapes {
                if shape.count > Self.maxRank {
                    throw fail("\(kind) '\(name)' \(field)", "has \(shape.count) dimensions; at most \(Self.maxRank) are accepted")
                }
                if let big = shape.first(where: { $0 > Self.maxDimension }) {
                    throw fail("\(kind) '\(name)' \(field)", "dimension \(big) is larger than the limit of \(Self.maxDimension)")
                }
                let largest = batch + shape.map { max($0, 1) }
                let elementType = DataType(configType: type) ?? .fp64
                guard let bytes = Tensor.byteCount(of: largest, type: elementType == .bytes ? .uint8 : elementType) else {
                    throw fail("\(kind) '\(name)' \(field)", "\(shape) (batch \(batch.first ?? 0)) holds more bytes than any tensor can")
                }
                // Warm-up samples and sequence state are allocated by the server itself, at load.
                if !kind.hasPrefix("input"), !kind.hasPrefix("output"), bytes > Self.maxServerAllocatedBytes {
                    throw fail("\(kind) '\(name)' \(field)", "\(shape) (batch \(batch.first ?? 0)) needs \(bytes) bytes, more than the limit of \(Self.maxServerAllocatedBytes)")
                }
            }
        }
        for (i, group) in instanceGroup.enumerated() where group.count > 1 << 16 {
            throw fail("instance_group[\(i)].count", "\(group.count) is larger than the limit of 65536 instances per group")
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
