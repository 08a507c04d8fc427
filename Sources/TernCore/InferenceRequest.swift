/// One inference call as the engine sees it, whichever frontend (HTTP, gRPC, in-process) made it.
public struct InferenceRequest: Sendable {
    /// Name of the model (or experiment) the request is for.
    public var modelName: String
    /// The version to run; nil runs the highest ready version, as Triton does.
    public var modelVersion: Int64?
    /// Echoed back in the response.
    public var id: String
    /// Request-level parameters, such as sequence controls or an experiment's routing key.
    public var parameters: [String: InferParameter]
    /// The input tensors, by name.
    public var inputs: [Tensor]
    /// The outputs to return; empty returns every output of the model.
    public var outputs: [RequestedOutput]

    /// Makes a request for a model from its inputs; version, id, parameters and requested outputs are optional.
    public init(
        modelName: String, modelVersion: Int64? = nil, id: String = "",
        parameters: [String: InferParameter] = [:], inputs: [Tensor], outputs: [RequestedOutput] = []
    ) {
        self.modelName = modelName
        self.modelVersion = modelVersion
        self.id = id
        self.parameters = parameters
        self.inputs = inputs
        self.outputs = outputs
    }
}

/// An output the client asks for, with the classification extension's top-k count.
public struct RequestedOutput: Sendable, Hashable {
    /// Name of the model output asked for.
    public var name: String
    /// When above zero, the output is returned as the `classificationCount` highest entries of each
    /// batch row, as BYTES strings "value:index[:label]" (Triton's classification extension).
    public var classificationCount: Int
    /// The output's own parameters, such as where in shared memory to write it.
    public var parameters: [String: InferParameter]

    /// Makes a request for the output `name`, optionally as its top `classificationCount` classes.
    public init(name: String, classificationCount: Int = 0, parameters: [String: InferParameter] = [:]) {
        self.name = name
        self.classificationCount = classificationCount
        self.parameters = parameters
    }
}

/// The result of one inference call.
public struct InferenceResponse: Sendable {
    /// Name of the model (or experiment) that answered.
    public var modelName: String
    /// The model version that ran the request.
    public var modelVersion: Int64
    /// The request's id, echoed back.
    public var id: String
    /// Response-level parameters, such as the variant an experiment sent the request to.
    public var parameters: [String: InferParameter]
    /// The output tensors: those the request asked for, or all of the model's when it named none.
    public var outputs: [Tensor]

    /// Makes a response from the model, version and request id that produced the outputs.
    public init(
        modelName: String, modelVersion: Int64, id: String,
        parameters: [String: InferParameter] = [:], outputs: [Tensor]
    ) {
        self.modelName = modelName
        self.modelVersion = modelVersion
        self.id = id
        self.parameters = parameters
        self.outputs = outputs
    }

    /// The output with the given name.
    public func output(named name: String) -> Tensor? {
        outputs.first { $0.name == name }
    }
}
