import Foundation
import TernCore
import TernTraining

/// Smaller updates between Tern peers, negotiated per client: a Tern client says in
/// `get_properties` which encodings it reads (`tern_compression: "fp16,int8"`); the coordinator,
/// when its settings ask for one (`compression: fp16 | int8`), sends that client the global model
/// in float16 and the key `tern_compression` in `FitIns.config`, and the client answers with its
/// update (trained minus received weights) in that encoding. Flower's own clients never see either.
///
/// On the wire (`Parameters.tensor_type`): `tern.fp16` — each array a float16 `.npy`;
/// `tern.delta.fp16` — the update as float16 `.npy`s; `tern.delta.int8` — the update quantised per
/// array to 8 bits: `TQ8\u{1}`, the minimum and the step as little-endian float64, then a uint8
/// `.npy` of the array's shape (value = minimum + q · step).
public enum UpdateCompression: String, Sendable, Codable, CaseIterable {
    /// Half precision: half the bytes of float32.
    case fp16
    /// 8-bit affine quantisation of the update: a quarter of the bytes.
    case int8

    /// The property a Tern client reports.
    public static let propertyKey = "tern_compression"

    /// The encodings a property value lists.
    public static func supported(_ value: FLScalar?) -> Set<UpdateCompression> {
        guard case .string(let list)? = value else { return [] }
        return Set(list.split(separator: ",").compactMap { UpdateCompression(rawValue: $0.trimmingCharacters(in: .whitespaces)) })
    }

    /// The `tensor_type` of a global model sent compressed.
    static let globalType = "tern.fp16"

    /// The `tensor_type` of an update in this encoding.
    var deltaType: String { "tern.delta.\(rawValue)" }

    /// The global weights as float16 `Parameters`.
    static func global(_ weights: [ParameterArray]) throws(TernError) -> Flwr_Proto_Parameters {
        var parameters = Flwr_Proto_Parameters()
        parameters.tensorType = globalType
        parameters.tensors = try weights.map { array throws(TernError) in try array.converted(to: .fp16).npy() }
        return parameters
    }

    /// `trained - base` in this encoding.
    func update(trained: [ParameterArray], base: [ParameterArray]) throws(TernError) -> Flwr_Proto_Parameters {
        var parameters = Flwr_Proto_Parameters()
        parameters.tensorType = deltaType
        parameters.tensors = try zip(trained, base).map { pair throws(TernError) in
            let delta = pair.0.with(values: zip(pair.0.values, pair.1.values).map { $0 - $1 })
            switch self {
            case .fp16: return try delta.converted(to: .fp16).npy()
            case .int8: return try Self.quantize(delta)
            }
        }
        return parameters
    }

    /// The weights an update in `parameters` stands for, given the `base` it was taken from
    /// (each array keeps the base's element type); nil when `parameters` is not a Tern update.
    static func apply(_ parameters: Flwr_Proto_Parameters, base: [ParameterArray]) -> Result<[ParameterArray], FLFailureReason>? {
        guard let encoding = allCases.first(where: { $0.deltaType == parameters.tensorType }) else { return nil }
        guard parameters.tensors.count == base.count else { return .failure(.badParameters) }
        var out: [ParameterArray] = []
        for (index, (data, reference)) in zip(parameters.tensors, base).enumerated() {
            let delta: ParameterArray
            do {
                delta = encoding == .fp16 ? try ParameterArray(npy: data, index: index) : try dequantize(data, index: index)
            } catch {
                return .failure(.badParameters)
            }
            guard delta.shape == reference.shape, delta.values.allSatisfy(\.isFinite) else { return .failure(.badParameters) }
            out.append(reference.with(values: zip(reference.values, delta.values).map { $0 + $1 }))
        }
        return .success(out)
    }

    static func quantize(_ array: ParameterArray) throws(TernError) -> Data {
        guard array.values.allSatisfy(\.isFinite) else { throw .invalidArgument("the update has values that are not finite") }
        let low = array.values.min() ?? 0
        let high = array.values.max() ?? 0
        let step = high > low ? (high - low) / 255 : 1
        let codes = array.values.map { Double(UInt8(min(max(($0 - low) / step, 0), 255).rounded())) }
        var data = Data("TQ8".utf8) + Data([1])
        withUnsafeBytes(of: low.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        withUnsafeBytes(of: step.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        data.append(try ParameterArray(dataType: .uint8, shape: array.shape, values: codes).npy())
        return data
    }

    static func dequantize(_ data: Data, index: Int) throws(TernError) -> ParameterArray {
        let bytes = [UInt8](data)
        guard bytes.count > 20, bytes[0..<4].elementsEqual(Array("TQ8".utf8) + [1]) else {
            throw .invalidArgument("array \(index) is not an int8 update")
        }
        func double(_ at: Int) -> Double {
            Double(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) })
        }
        let (low, step) = (double(4), double(12))
        let codes = try ParameterArray(npy: Data(bytes[20...]), index: index)
        guard codes.dataType == .uint8, low.isFinite, step.isFinite else { throw .invalidArgument("array \(index) is not an int8 update") }
        return ParameterArray(dataType: .fp64, shape: codes.shape, values: codes.values.map { low + $0 * step })
    }
}
