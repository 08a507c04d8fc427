import Foundation
import Logging
import TernCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The loaded ONNX Runtime shared library and its C API table. One per process; every session and
/// value refers to it. The table is immutable once fetched, so the class is safely shared.
final class ORTLibrary: @unchecked Sendable {
    // @unchecked: all stored properties are immutable after init; `handle` and `table` point at
    // memory the library owns for the life of the process (it is never dlclose'd).
    let path: String
    /// The library's version string, e.g. "1.32.0".
    let version: String
    /// The API version whose table we hold (the library's minor version, or lower).
    let apiVersion: UInt32
    private let table: UnsafePointer<UnsafeRawPointer?>
    /// `GetAllocatorWithDefaultOptions()`, used to free strings ORT returns.
    let defaultAllocator: UnsafeMutableRawPointer

    init(path: String) throws(TernError) {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw .internalError("cannot load ONNX Runtime from \(path): \(reason)")
        }
        guard let symbol = dlsym(handle, "OrtGetApiBase") else {
            throw .internalError("\(path) does not export OrtGetApiBase: not an ONNX Runtime library")
        }
        let getApiBase = unsafeBitCast(symbol, to: ORTSignature.GetApiBase.self)
        guard let base = getApiBase() else { throw .internalError("\(path): OrtGetApiBase returned NULL") }
        // struct OrtApiBase { GetApi; GetVersionString; }
        let getApi = unsafeBitCast(base[0], to: ORTSignature.GetApi.self)
        let getVersion = unsafeBitCast(base[1], to: ORTSignature.GetVersionString.self)
        let version = getVersion().map { String(cString: $0) } ?? "unknown"

        // Ask for the table matching the library: asking for a newer version than it has returns NULL.
        let minor = version.split(separator: ".").dropFirst().first.flatMap { UInt32($0) } ?? ORTFunction.minimumAPIVersion
        var requested = max(minor, ORTFunction.minimumAPIVersion)
        var api: UnsafeRawPointer? = nil
        while requested >= ORTFunction.minimumAPIVersion {
            api = getApi(requested)
            if api != nil { break }
            requested -= 1
        }
        guard let api else {
            throw .internalError(
                "ONNX Runtime \(version) at \(path) offers no C API version between \(ORTFunction.minimumAPIVersion) and \(minor); Tern needs ONNX Runtime 1.11 or newer")
        }
        self.path = path
        self.version = version
        self.apiVersion = requested
        self.table = api.assumingMemoryBound(to: UnsafeRawPointer?.self)

        let getAllocator = unsafeBitCast(table[ORTFunction.getAllocatorWithDefaultOptions.rawValue], to: ORTSignature.GetAllocator.self)
        var allocator: UnsafeMutableRawPointer? = nil
        let status = getAllocator(&allocator)
        guard status == nil, let allocator else { throw .internalError("ONNX Runtime gave no default allocator") }
        self.defaultAllocator = allocator
    }

    /// The table entry at `function`'s position, typed as `type`.
    @inline(__always)
    func function<F>(_ function: ORTFunction, as type: F.Type) -> F {
        unsafeBitCast(table[function.rawValue], to: F.self)
    }

    /// Turns an `OrtStatus*` into a thrown `TernError` (releasing the status); nil is success.
    @inline(__always)
    func check(_ status: ORTStatusPointer, _ context: @autoclosure () -> String) throws(TernError) {
        guard let status else { return }
        let code = function(.getErrorCode, as: ORTSignature.GetErrorCode.self)(status)
        let message = function(.getErrorMessage, as: ORTSignature.GetErrorMessage.self)(status)
            .map { String(cString: $0) } ?? "no message"
        function(.releaseStatus, as: ORTSignature.Release.self)(status)
        // ORT_INVALID_ARGUMENT (2) is the caller's mistake; everything else is a backend failure.
        throw TernError(code == 2 ? .invalidArgument : .internalError, "\(context()): \(message)")
    }

    /// Frees a string ORT allocated with the default allocator.
    func free(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        _ = function(.allocatorFree, as: ORTSignature.AllocatorFree.self)(defaultAllocator, pointer)
    }

    /// Names of the execution providers compiled into the library, e.g. ["CPUExecutionProvider"].
    func availableProviders() -> [String] {
        var list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        var count: Int32 = 0
        guard function(.getAvailableProviders, as: ORTSignature.GetAvailableProviders.self)(&list, &count) == nil,
            let list
        else { return [] }
        defer { _ = function(.releaseAvailableProviders, as: ORTSignature.ReleaseAvailableProviders.self)(list, count) }
        return (0..<Int(count)).compactMap { list[$0].map { String(cString: $0) } }
    }
}
