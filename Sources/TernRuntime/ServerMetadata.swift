import TernCore

/// What `GET /v2` and gRPC ServerMetadata report.
public struct ServerMetadata: Sendable, Hashable {
    public var name: String
    public var version: String
    /// Protocol extensions Tern really implements.
    public var extensions: [String]

    public static let supportedExtensions = [
        "classification", "model_repository", "model_configuration", "binary_tensor_data", "parameters",
        "statistics", "system_shared_memory",
    ]
}

/// What `GET /v2/models/{m}` and gRPC ModelMetadata report.
public struct ModelMetadata: Sendable, Hashable {
    public var name: String
    public var versions: [String]
    public var platform: String
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
}

/// One row of the repository index.
public struct ModelIndexEntry: Sendable, Hashable {
    public var name: String
    public var version: String
    /// "READY", "LOADING", "UNAVAILABLE", "UNLOADING" or "" when the model was never loaded.
    public var state: String
    public var reason: String
}
