import Foundation
import TernCore

/// One `OrtSession`: the loaded model, its declared inputs and outputs, and `run`. The session
/// handle and the C strings of the tensor names are freed in `deinit`.
final class ORTSession: @unchecked Sendable {
    // @unchecked: the handle is only used through ORT's Run, which is thread-safe; everything else
    // is immutable after init.
    let environment: ORTEnvironment
    let signature: ModelSignature
    private let session: ORTHandle
    private let inputNames: [String: UnsafeMutablePointer<CChar>]
    private let outputNames: [String: UnsafeMutablePointer<CChar>]
    private var library: ORTLibrary { environment.library }

    init(environment: ORTEnvironment, modelPath: String, options: ORTSessionOptions) throws(TernError) {
        self.environment = environment
        let library = environment.library
        var session: ORTHandle?
        try library.check(
            library.function(.createSession, as: ORTSignature.CreateSession.self)(
                environment.env, modelPath, options.handle, &session),
            "loading \(modelPath)")
        guard let session else { throw .internalError("ONNX Runtime returned no session for \(modelPath)") }
        self.session = session
        do {
            let inputs = try Self.describe(library, session, input: true)
            let outputs = try Self.describe(library, session, input: false)
            self.signature = ModelSignature(inputs: inputs, outputs: outputs)
        } catch {
            library.function(.releaseSession, as: ORTSignature.Release.self)(session)
            throw error
        }
        self.inputNames = Dictionary(uniqueKeysWithValues: signature.inputs.map { ($0.name, strdup($0.name)!) })
        self.outputNames = Dictionary(uniqueKeysWithValues: signature.outputs.map { ($0.name, strdup($0.name)!) })
    }

    deinit {
        library.function(.releaseSession, as: ORTSignature.Release.self)(session)
        for pointer in inputNames.values { Foundation.free(pointer) }
        for pointer in outputNames.values { Foundation.free(pointer) }
    }

    /// Runs the model on `inputs` (validated by the caller) and returns `outputs` in that order.
    func run(inputs: [Tensor], outputs requested: [String]) throws(TernError) -> [Tensor] {
        var values: [ORTHandle?] = []
        values.reserveCapacity(inputs.count)
        defer { for value in values { library.function(.releaseValue, as: ORTSignature.Release.self)(value) } }

        var names: [UnsafePointer<CChar>?] = []
        for tensor in inputs {
            guard let name = inputNames[tensor.name] else {
                throw .invalidArgument("the model has no input '\(tensor.name)'")
            }
            names.append(UnsafePointer(name))
        }
        var outputNamePointers: [UnsafePointer<CChar>?] = []
        for name in requested {
            guard let pointer = outputNames[name] else { throw .invalidArgument("the model has no output '\(name)'") }
            outputNamePointers.append(UnsafePointer(pointer))
        }
        var results = [ORTHandle?](repeating: nil, count: requested.count)
        defer { for value in results { library.function(.releaseValue, as: ORTSignature.Release.self)(value) } }

        // Bind every input to ORT, viewing the request's bytes directly where they are aligned.
        // The buffers must stay alive until Run returns, hence the nesting.
        try withInputValues(inputs[...], into: &values) { values throws(TernError) in
            try library.check(
                library.function(.run, as: ORTSignature.Run.self)(
                    session, nil, names, values, values.count, outputNamePointers, outputNamePointers.count,
                    &results),
                "running the model")
        }
        var tensors: [Tensor] = []
        tensors.reserveCapacity(requested.count)
        for (index, name) in requested.enumerated() {
            guard let value = results[index] else { throw .internalError("ONNX Runtime returned no value for output '\(name)'") }
            results[index] = nil  // ownership moves to the tensor built below
            tensors.append(try ORTValueReader(library: library).tensor(named: name, from: value))
        }
        return tensors
    }

    private func withInputValues(
        _ inputs: ArraySlice<Tensor>, into values: inout [ORTHandle?],
        _ body: ([ORTHandle?]) throws(TernError) -> Void
    ) throws(TernError) {
        guard let tensor = inputs.first else { return try body(values) }
        let rest = inputs.dropFirst()
        if tensor.dataType == .bytes {
            values.append(try makeStringValue(tensor))
            return try withInputValues(rest, into: &values, body)
        }
        let elementSize = tensor.dataType.elementSize!
        let elementType = ORTElementType(tensor.dataType)!.rawValue
        var outcome: Result<Void, TernError> = .success(())
        var copy: UnsafeMutableRawBufferPointer? = nil
        defer { copy?.deallocate() }
        tensor.data.withUnsafeBytes { raw in
            var pointer = raw.baseAddress
            if pointer == nil || Int(bitPattern: pointer) % elementSize != 0 {
                // Misaligned (or empty) request memory: ORT needs aligned elements, so copy once.
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(raw.count, 1), alignment: 16)
                if raw.count > 0 { buffer.copyMemory(from: raw) }
                copy = buffer
                pointer = UnsafeRawPointer(buffer.baseAddress!)
            }
            var value: ORTHandle?
            let status = tensor.shape.withUnsafeBufferPointer { shape in
                library.function(.createTensorWithDataAsOrtValue, as: ORTSignature.CreateTensorWithData.self)(
                    environment.cpuMemoryInfo, UnsafeMutableRawPointer(mutating: pointer!), raw.count,
                    shape.baseAddress ?? UnsafePointer(bitPattern: 8)!, shape.count, elementType, &value)
            }
            do throws(TernError) {
                try library.check(status, "binding input '\(tensor.name)'")
                values.append(value)
                try withInputValues(rest, into: &values, body)
            } catch {
                outcome = .failure(error)
            }
        }
        try outcome.get()
    }

    private func makeStringValue(_ tensor: Tensor) throws(TernError) -> ORTHandle {
        let elements = try tensor.strings()
        var value: ORTHandle?
        try tensor.shape.withUnsafeBufferPointer { shape throws(TernError) in
            try library.check(
                library.function(.createTensorAsOrtValue, as: ORTSignature.CreateTensorAsOrtValue.self)(
                    library.defaultAllocator, shape.baseAddress ?? UnsafePointer(bitPattern: 8)!, shape.count,
                    ORTElementType.string.rawValue, &value),
                "creating string input '\(tensor.name)'")
        }
        guard let value else { throw .internalError("ONNX Runtime returned no string tensor") }
        // ORT copies C strings: build NUL-terminated copies of each element.
        let cStrings: [UnsafeMutablePointer<CChar>] = elements.map { element in
            let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: element.count + 1)
            element.withUnsafeBytes { raw in
                if raw.count > 0 { memcpy(pointer, raw.baseAddress!, raw.count) }
            }
            pointer[element.count] = 0
            return pointer
        }
        defer { cStrings.forEach { $0.deallocate() } }
        let constPointers = cStrings.map { UnsafePointer<CChar>?($0) }
        do {
            try library.check(
                library.function(.fillStringTensor, as: ORTSignature.FillStringTensor.self)(
                    value, constPointers, constPointers.count),
                "filling string input '\(tensor.name)'")
        } catch {
            library.function(.releaseValue, as: ORTSignature.Release.self)(value)
            throw error
        }
        return value
    }

    private static func describe(_ library: ORTLibrary, _ session: ORTHandle, input: Bool) throws(TernError) -> [TensorSpec] {
        var count = 0
        try library.check(
            library.function(input ? .sessionGetInputCount : .sessionGetOutputCount, as: ORTSignature.GetCount.self)(
                session, &count),
            "counting model \(input ? "inputs" : "outputs")")
        var specs: [TensorSpec] = []
        for index in 0..<count {
            var rawName: UnsafeMutablePointer<CChar>?
            try library.check(
                library.function(input ? .sessionGetInputName : .sessionGetOutputName, as: ORTSignature.GetName.self)(
                    session, index, library.defaultAllocator, &rawName),
                "reading a model tensor name")
            let name = rawName.map { String(cString: $0) } ?? ""
            library.free(rawName)

            var typeInfo: ORTHandle?
            try library.check(
                library.function(input ? .sessionGetInputTypeInfo : .sessionGetOutputTypeInfo, as: ORTSignature.GetTypeInfo.self)(
                    session, index, &typeInfo),
                "reading the type of '\(name)'")
            defer { library.function(.releaseTypeInfo, as: ORTSignature.Release.self)(typeInfo) }
            var tensorInfo: ORTHandle?
            try library.check(
                library.function(.castTypeInfoToTensorInfo, as: ORTSignature.CastTypeInfoToTensorInfo.self)(
                    typeInfo!, &tensorInfo),
                "reading the type of '\(name)'")
            guard let tensorInfo else {
                throw .invalidArgument("model tensor '\(name)' is not a tensor (sequences and maps are not supported)")
            }
            let (elementType, shape) = try ORTValueReader(library: library).typeAndShape(tensorInfo)
            guard let dataType = ORTElementType(rawValue: elementType)?.dataType else {
                throw .invalidArgument("model tensor '\(name)' has ONNX element type \(elementType), which Tern does not serve")
            }
            specs.append(TensorSpec(name: name, dataType: dataType, shape: shape.map { $0 < 0 ? -1 : $0 }))
        }
        return specs
    }
}
