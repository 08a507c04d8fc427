import TernTraining

/// One array of the global model, as Flower moves it (a whole `.npy` file on the wire).
public typealias FLArray = ParameterArray

/// A model's parameters: its arrays in order (for an ONNX model, the order of its initializers).
public typealias FLWeights = [ParameterArray]

/// Weights on disk, one `.npy` per array.
public typealias FLWeightsFiles = WeightsFiles
