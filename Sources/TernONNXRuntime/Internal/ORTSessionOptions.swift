import Foundation
import Logging
import TernCore

/// `OrtSessionOptions` built from a model's config: thread counts, graph optimization level and
/// execution providers. Freed in `deinit`.
final class ORTSessionOptions {
    let handle: ORTHandle
    private let library: ORTLibrary
    private var providerOptions: [(ORTHandle, ORTFunction)] = []

    init(library: ORTLibrary) throws(TernError) {
        self.library = library
        var handle: ORTHandle?
        try library.check(
            library.function(.createSessionOptions, as: ORTSignature.CreateHandle.self)(&handle),
            "creating session options")
        self.handle = handle!
    }

    deinit {
        for (options, release) in providerOptions {
            library.function(release, as: ORTSignature.Release.self)(options)
        }
        library.function(.releaseSessionOptions, as: ORTSignature.Release.self)(handle)
    }

    func setThreads(intraOp: Int, interOp: Int) throws(TernError) {
        try library.check(
            library.function(.setIntraOpNumThreads, as: ORTSignature.SetInt.self)(handle, Int32(intraOp)),
            "setting intra-op threads")
        try library.check(
            library.function(.setInterOpNumThreads, as: ORTSignature.SetInt.self)(handle, Int32(interOp)),
            "setting inter-op threads")
    }

    func setGraphOptimization(_ level: ORTGraphOptimizationLevel) throws(TernError) {
        try library.check(
            library.function(.setSessionGraphOptimizationLevel, as: ORTSignature.SetInt.self)(handle, level.rawValue),
            "setting the graph optimization level")
    }

    func addConfigEntry(_ key: String, _ value: String) throws(TernError) {
        try library.check(
            library.function(.addSessionConfigEntry, as: ORTSignature.AddConfigEntry.self)(handle, key, value),
            "setting session option \(key)")
    }

    /// Appends the CUDA provider through the `_V2` options entries.
    func appendCUDA(options: [String: String]) throws(TernError) {
        try appendProvider(
            create: .createCUDAProviderOptions, update: .updateCUDAProviderOptions,
            append: .sessionOptionsAppendExecutionProviderCUDAV2, release: .releaseCUDAProviderOptions,
            options: options, name: "CUDA")
    }

    /// Appends the TensorRT provider through the `_V2` options entries.
    func appendTensorRT(options: [String: String]) throws(TernError) {
        try appendProvider(
            create: .createTensorRTProviderOptions, update: .updateTensorRTProviderOptions,
            append: .sessionOptionsAppendExecutionProviderTensorRTV2, release: .releaseTensorRTProviderOptions,
            options: options, name: "TensorRT")
    }

    /// Appends the OpenVINO provider through the append-by-name entry ("OpenVINO" and its
    /// string options: `device_type`, `precision`, ...).
    func appendOpenVINO(options: [String: String]) throws(TernError) {
        guard library.apiVersion >= ORTFunction.sessionOptionsAppendExecutionProvider.addedInVersion else {
            throw .invalidArgument("ONNX Runtime \(library.version) is too old to append the OpenVINO provider by name (1.16 or later needed)")
        }
        let status = Self.withCStrings(options) { keys, values, count in
            library.function(.sessionOptionsAppendExecutionProvider, as: ORTSignature.AppendProviderByName.self)(
                handle, "OpenVINO", keys, values, count)
        }
        try library.check(status, "enabling the OpenVINO execution provider with \(options)")
    }

    /// Calls `body` with `options` as parallel C arrays of keys and values (sorted by key), valid
    /// for the call only, as ORT's string-option entries take them.
    private static func withCStrings(
        _ options: [String: String], _ body: (UnsafePointer<ORTSignature.CString?>, UnsafePointer<ORTSignature.CString?>, Int) -> ORTStatusPointer
    ) -> ORTStatusPointer {
        let keys = options.keys.sorted()
        let cKeys = keys.map { strdup($0) }
        let cValues = keys.map { strdup(options[$0]!) }
        defer { (cKeys + cValues).forEach { free($0) } }
        let keyPointers = cKeys.map { $0.map { UnsafePointer<CChar>($0) } }
        let valuePointers = cValues.map { $0.map { UnsafePointer<CChar>($0) } }
        return body(keyPointers, valuePointers, keys.count)
    }

    private func appendProvider(
        create: ORTFunction, update: ORTFunction, append: ORTFunction, release: ORTFunction,
        options: [String: String], name: String
    ) throws(TernError) {
        var providerOptions: ORTHandle?
        try library.check(library.function(create, as: ORTSignature.CreateHandle.self)(&providerOptions), "creating \(name) options")
        guard let providerOptions else { throw .internalError("ONNX Runtime returned no \(name) options") }
        self.providerOptions.append((providerOptions, release))
        if !options.isEmpty {
            let status = Self.withCStrings(options) { keys, values, count in
                library.function(update, as: ORTSignature.UpdateProviderOptions.self)(providerOptions, keys, values, count)
            }
            try library.check(status, "setting \(name) options \(options)")
        }
        try library.check(
            library.function(append, as: ORTSignature.AppendProvider.self)(handle, providerOptions),
            "enabling the \(name) execution provider")
    }
}
