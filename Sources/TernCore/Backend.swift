import Foundation
import Logging

/// Name, element type and shape of one model input or output as the model file declares it;
/// -1 marks a dimension of any size.
public struct TensorSpec: Sendable, Hashable {
    /// The tensor's name in the model file.
    public var name: String
    /// The element type the model declares.
    public var dataType: DataType
    /// The declared dimensions, -1 where any size is accepted.
    public var shape: [Int64]

    /// Makes a spec from a tensor's name, element type and declared shape.
    public init(name: String, dataType: DataType, shape: [Int64]) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
    }
}

/// The inputs and outputs a model file declares.
public struct ModelSignature: Sendable, Hashable {
    /// The model's declared inputs, in file order.
    public var inputs: [TensorSpec]
    /// The model's declared outputs, in file order.
    public var outputs: [TensorSpec]

    /// Makes a signature from the declared inputs and outputs.
    public init(inputs: [TensorSpec], outputs: [TensorSpec]) {
        self.inputs = inputs
        self.outputs = outputs
    }
}

/// A way of executing models (ONNX Runtime, a remote server, ...). The engine asks it for one
/// `ModelInstance` per entry of the config's instance groups.
public protocol Backend: Sendable {
    /// The `backend` name in config.pbtxt, e.g. "onnxruntime".
    var name: String { get }
    /// The `platform` names it also answers to, e.g. "onnxruntime_onnx".
    var platforms: [String] { get }
    /// The file in a version folder that holds the model, unless `default_model_filename` says otherwise.
    var defaultModelFilename: String { get }

    /// Creates one execution instance of the model at `modelPath`.
    func makeInstance(
        modelPath: URL, config: ModelConfig, instance: InstancePlacement, logger: Logger
    ) throws -> any ModelInstance

    /// How many instances a model gets when its config has no instance group; nil: one per
    /// Triton's rule. Backends whose instances mostly wait (on other models, on a remote
    /// server) ask for more, so requests are not serialised behind one waiting instance.
    var defaultInstanceCount: Int? { get }
}

extension Backend {
    /// By default a backend leaves the instance count to Triton's rule (nil).
    public var defaultInstanceCount: Int? { nil }
}

/// Where and how an instance runs, as its instance group says.
public struct InstancePlacement: Sendable, Hashable {
    /// The processor an instance runs on: the CPU, or the GPU with the given device id.
    public enum Kind: Sendable, Hashable { case cpu, gpu(deviceID: Int) }
    /// Whether the instance runs on the CPU or on which GPU.
    public var kind: Kind
    /// Index of this instance among all instances of the model version.
    public var index: Int
    /// Threads ONNX Runtime may use inside one operator for this instance (0 = backend default).
    public var intraOpThreads: Int

    /// Makes a placement from the processor kind, the instance's index and its intra-op thread count.
    public init(kind: Kind, index: Int, intraOpThreads: Int) {
        self.kind = kind
        self.index = index
        self.intraOpThreads = intraOpThreads
    }
}

/// One loaded copy of a model that executes a batch at a time. `execute` is called from one
/// thread at a time per instance and may block; the engine runs it off the async executor.
public protocol ModelInstance: AnyObject, Sendable {
    /// What the model file declares.
    var signature: ModelSignature { get }

    /// Runs the model. `inputs` are already validated against the config; returns the outputs
    /// named in `outputNames`, in that order.
    func execute(inputs: [Tensor], outputNames: [String]) throws -> [Tensor]

    /// Whether the engine may run this instance on a caller's thread (a frontend's event loop)
    /// when it is fast and free. Instances that wait on I/O (remote models) say no.
    var mayRunOnCallerThread: Bool { get }

    /// The execution providers its session runs on, in the order they take nodes (e.g.
    /// `TensorrtExecutionProvider`, `CUDAExecutionProvider`, `CPUExecutionProvider`); empty for
    /// instances that are not ONNX Runtime sessions.
    var executionProviders: [String] { get }

    /// Providers the config asked for that the library lacks, left out because the config allows
    /// falling back to the CPU (`tern.accelerator.fallback`).
    var providerFallbacks: [String] { get }
}

extension ModelInstance {
    /// By default an instance may run on a caller's thread.
    public var mayRunOnCallerThread: Bool { true }
    /// None by default.
    public var executionProviders: [String] { [] }
    /// None by default.
    public var providerFallbacks: [String] { [] }
}
