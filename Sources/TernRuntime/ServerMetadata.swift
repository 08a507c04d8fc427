import TernCore

/// What `GET /v2` and gRPC ServerMetadata report.
public struct ServerMetadata: Sendable, Hashable {
    /// The server's name (`ServerConfiguration.serverName`, "tern" by default).
    public var name: String
    /// The server's version string (`ServerConfiguration.serverVersion`).
    public var version: String
    /// Protocol extensions Tern really implements.
    public var extensions: [String]

    /// The KServe protocol extensions this server implements, as server metadata lists them.
    public static let supportedExtensions = [
        "classification", "model_repository", "model_configuration", "binary_tensor_data", "parameters",
        "statistics", "system_shared_memory",
    ]
}

/// What `GET /v2/models/{m}` and gRPC ModelMetadata report.
public struct ModelMetadata: Sendable, Hashable {
    /// The model's name as asked for: a virtual model's own name, not that of the model it presents.
    public var name: String
    /// The version asked for, or every ready version when none was, as decimal strings.
    public var versions: [String]
    /// The config's `platform`, or its `backend` when the platform is empty.
    public var platform: String
    /// The input tensors' names, data types and shapes, each shape led by -1 (the batch) when the model batches.
    public var inputs: [TensorSpec]
    /// The output tensors' names, data types and shapes, each shape led by -1 (the batch) when the model batches.
    public var outputs: [TensorSpec]
}

/// One row of the repository index.
public struct ModelIndexEntry: Sendable, Hashable {
    /// The name of the model the row is about.
    public var name: String
    /// The version the row is about, as a decimal string; empty for a row about the whole model.
    public var version: String
    /// "READY", "LOADING", "UNAVAILABLE", "UNLOADING" or "" when the model was never loaded.
    public var state: String
    /// Why the version or model is not ready (a load failure or a composing model not ready); empty otherwise.
    public var reason: String
}
