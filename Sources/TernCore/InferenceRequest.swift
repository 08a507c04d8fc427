/// One inference call as the engine sees it, whichever frontend (HTTP, gRPC, in-process) made it.
public struct InferenceRequest: Sendable {
    public var modelName: String
    /// The version to run; nil runs the highest ready version, as Triton does.
    public var modelVersion: Int64?
    /// Echoed back in the response.
    public var id: String
    public var parameters: [String: InferParameter]
    public var inputs: [Tensor]
    /// The outputs to return; empty returns every output of the model.
    public var outputs: [RequestedOutput]

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
    public var name: String
    /// When above zero, the output is returned as the `classificationCount` highest entries of each
    /// batch row, as BYTES strings "value:index[:label]" (Triton's classification extension).
    public var classificationCount: Int
    public var parameters: [String: InferParameter]

    public init(name: String, classificationCount: Int = 0, parameters: [String: InferParameter] = [:]) {
        self.name = name
        self.classificationCount = classificationCount
        self.parameters = parameters
    }
}

/// The result of one inference call.
public struct InferenceResponse: Sendable {
    public var modelName: String
    public var modelVersion: Int64
    public var id: String
    public var parameters: [String: InferParameter]
    public var outputs: [Tensor]

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
