import TernCore

/// A model name answered by code rather than by a model of the repository — an A/B experiment's
/// name, which sends each request to one of its variants. Registered with
/// `InferenceServer.register(virtual:)`; clients cannot tell it from a model: it has metadata,
/// a config and readiness (those of the model it presents), and answers inference.
public protocol VirtualModel: Sendable {
    var name: String { get }
    /// The model whose inputs, outputs and config this name shows (e.g. the control variant).
    var presented: (model: String, version: Int64?) { get }
    /// Answers `request` (not validated: the model it is sent to validates it), calling
    /// `completion` once, from any thread.
    /// When the model it goes to runs inline, `completion` runs before `handle` returns.
    func handle(_ request: InferenceRequest, engine: InferenceServer, completion: @escaping @Sendable (Result<InferenceResponse, TernError>) -> Void)
}
