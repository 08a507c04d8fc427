import Foundation
import Logging

/// A backend whose instances are made by async work (a remote backend reads the remote model's
/// metadata over the network): the loader awaits `loadInstance` instead of calling
/// `makeInstance` on a thread.
public protocol AsynchronousBackend: Backend {
    /// Creates one execution instance of the model at `modelPath`, awaiting what it needs.
    func loadInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) async throws -> any ModelInstance
}

extension AsynchronousBackend {
    /// The synchronous entry point is not used for these backends (the loader calls `loadInstance`).
    public func makeInstance(modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger) throws -> any ModelInstance {
        throw TernError.internalError("the \(name) backend makes its instances asynchronously")
    }
}

/// An instance whose runs wait on I/O (a remote model): the engine awaits each run, so no thread
/// is held while the answer travels. Such instances never run on a caller's thread, and are not
/// used where the engine needs a synchronous run (model warm-up, the sequence batcher).
public protocol AsynchronousModelInstance: ModelInstance {
    /// Runs the model; returns the outputs named in `outputNames`, in that order.
    func run(inputs: [Tensor], outputNames: [String]) async throws(TernError) -> [Tensor]
}

extension AsynchronousModelInstance {
    /// Refused: this instance only runs asynchronously (see `run`).
    public func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor] {
        throw TernError(.unimplemented, "this model runs asynchronously only: model warm-up and sequence batching are not available for it")
    }

    /// Never: a run waits on I/O.
    public var mayRunOnCallerThread: Bool { false }
}
