import TernCore

/// Checks a request against a model's config the way Triton does, with Triton's wording where a
/// client may match on it, and prepares the tensors the backend receives (reshape applied).
struct RequestValidator: Sendable {
    let config: ModelConfig
    private let inputs: [String: Inference_ModelInput]
    private let outputs: [String: Inference_ModelOutput]
    let allOutputNames: [String]

    init(config: ModelConfig) {
        self.config = config
        self.inputs = Dictionary(config.input.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.outputs = Dictionary(config.output.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.allOutputNames = config.output.map(\.name)
    }

    /// Validates `request` and returns the backend's inputs, the batch size (1 when the model does
    /// not batch) and the outputs to compute.
    func prepare(_ request: InferenceRequest) throws(TernError) -> (inputs: [Tensor], batchSize: Int, outputs: [String]) {
        let model = config.name
        let batching = config.maxBatchSize > 0
        var batchSize: Int64? = nil
        var prepared: [Tensor] = []
        prepared.reserveCapacity(request.inputs.count)
        var seen = Set<String>()
        for var tensor in request.inputs {
            guard let spec = inputs[tensor.name] else {
                throw .invalidArgument("unexpected inference input '\(tensor.name)' for model '\(model)'")
            }
            guard seen.insert(tensor.name).inserted else {
                throw .invalidArgument("input '\(tensor.name)' appears more than once in the request for model '\(model)'")
            }
            let expectedType = DataType(configType: spec.dataType)!
            guard tensor.dataType == expectedType else {
                throw .invalidArgument(
                    "inference input '\(tensor.name)' data-type is '\(tensor.dataType.protocolName)', but model '\(model)' expects '\(expectedType.protocolName)'")
            }
            var itemShape = tensor.shape[...]
            if batching {
                guard let first = tensor.shape.first else {
                    throw .invalidArgument(
                        "inference input '\(tensor.name)' has no batch dimension, but model '\(model)' batches (max_batch_size \(config.maxBatchSize))")
                }
                guard first >= 1, first <= Int64(config.maxBatchSize) else {
                    throw .invalidArgument(
                        "inference request batch-size must be <= \(config.maxBatchSize) for '\(model)' (input '\(tensor.name)' has batch size \(first))")
                }
                if let batchSize, batchSize != first {
                    throw .invalidArgument(
                        "inputs of a request must share one batch size: '\(tensor.name)' has \(first), another input has \(batchSize)")
                }
                batchSize = first
                itemShape = tensor.shape.dropFirst()
            }
            guard itemShape.count == spec.dims.count,
                zip(itemShape, spec.dims).allSatisfy({ $1 == -1 || $0 == $1 })
            else {
                let full = (batching ? [-1] : []) + spec.dims
                throw .invalidArgument(
                    "unexpected shape for input '\(tensor.name)' for model '\(model)'. Expected \(full), got \(tensor.shape)")
            }
            if let negative = itemShape.first(where: { $0 < 0 }) {
                throw .invalidArgument("input '\(tensor.name)' has a negative dimension \(negative)")
            }
            try tensor.validateByteSize()
            if spec.hasReshape {
                tensor.shape = (batching ? [tensor.shape[0]] : []) + Self.resolve(spec.reshape.shape, elements: Tensor.elementCount(of: Array(itemShape)))
            }
            prepared.append(tensor)
        }
        for spec in config.input where !spec.optional && !seen.contains(spec.name) {
            throw .invalidArgument(
                "expected \(config.input.filter { !$0.optional }.count) inputs but got \(request.inputs.count) inputs for model '\(model)'. Missing input: '\(spec.name)'")
        }
        var outputNames: [String] = []
        if request.outputs.isEmpty {
            outputNames = allOutputNames
        } else {
            for requested in request.outputs {
                guard outputs[requested.name] != nil else {
                    throw .invalidArgument("unexpected inference output '\(requested.name)' for model '\(model)'")
                }
                if requested.classificationCount < 0 {
                    throw .invalidArgument("output '\(requested.name)': classification count must not be negative")
                }
                if !outputNames.contains(requested.name) { outputNames.append(requested.name) }
            }
        }
        return (prepared, Int(batchSize ?? 1), outputNames)
    }

    /// Restores an output to the shape the config declares (undoing a `reshape`).
    func shapeOutput(_ tensor: Tensor, batchSize: Int) -> Tensor {
        guard let spec = outputs[tensor.name], spec.hasReshape else { return tensor }
        var shaped = tensor
        let batch: [Int64] = config.maxBatchSize > 0 ? [Int64(batchSize)] : []
        let perItem = tensor.elementCount / max(batchSize, 1)
        shaped.shape = batch + Self.resolve(spec.dims, elements: config.maxBatchSize > 0 ? perItem : tensor.elementCount)
        return shaped
    }

    /// A shape with its one -1 dimension filled in so it holds `elements`.
    static func resolve(_ shape: [Int64], elements: Int) -> [Int64] {
        guard let wildcard = shape.firstIndex(of: -1) else { return shape }
        let known = shape.enumerated().reduce(1) { $1.offset == wildcard ? $0 : $0 * Int($1.element) }
        var resolved = shape
        resolved[wildcard] = known == 0 ? 0 : Int64(elements / known)
        return resolved
    }
}
