import Foundation
import Testing
import TernCore
import TernTesting
@testable import TernONNXRuntime

/// The function-table positions in `ORTFunction` are checked against the real library: a wrong
/// position would call a different function without any error at compile time.
@Suite struct ORTAPITableTests {
    var library: ORTLibrary { get throws { try TestEnvironment.backend.get().environment.library } }

    @Test func statusEntriesRoundTrip() throws {
        let library = try library
        let status = library.function(.createStatus, as: ORTSignature.CreateStatus.self)(3, "tern ordinal check")
        let handle = try #require(status)
        #expect(library.function(.getErrorCode, as: ORTSignature.GetErrorCode.self)(handle) == 3)
        let message = library.function(.getErrorMessage, as: ORTSignature.GetErrorMessage.self)(handle).map { String(cString: $0) }
        #expect(message == "tern ordinal check")
        library.function(.releaseStatus, as: ORTSignature.Release.self)(handle)
    }

    @Test func checkTurnsAStatusIntoATernError() throws {
        let library = try library
        let invalid = library.function(.createStatus, as: ORTSignature.CreateStatus.self)(2, "bad input")
        #expect { try library.check(invalid, "context") } throws: { error in
            (error as? TernError)?.code == .invalidArgument && (error as? TernError)?.message == "context: bad input"
        }
        let failure = library.function(.createStatus, as: ORTSignature.CreateStatus.self)(1, "boom")
        #expect { try library.check(failure, "context") } throws: { error in (error as? TernError)?.code == .internalError }
    }

    @Test func providerListIncludesTheCPUProvider() throws {
        #expect(try library.availableProviders().contains("CPUExecutionProvider"))
    }

    @Test func tensorEntriesDescribeWhatTheyCreate() throws {
        let library = try library
        var value: ORTHandle?
        let shape: [Int64] = [2, 5, 7]
        try library.check(
            library.function(.createTensorAsOrtValue, as: ORTSignature.CreateTensorAsOrtValue.self)(
                library.defaultAllocator, shape, shape.count, ORTElementType.int16.rawValue, &value), "create")
        let tensor = try #require(value)
        defer { library.function(.releaseValue, as: ORTSignature.Release.self)(tensor) }
        var info: ORTHandle?
        try library.check(library.function(.getTensorTypeAndShape, as: ORTSignature.GetTensorTypeAndShape.self)(tensor, &info), "info")
        defer { library.function(.releaseTensorTypeAndShapeInfo, as: ORTSignature.Release.self)(info) }
        let (type, dims) = try ORTValueReader(library: library).typeAndShape(try #require(info))
        #expect(type == ORTElementType.int16.rawValue)
        #expect(dims == shape)
    }

    @Test func cudaOptionEntriesAreReachable() throws {
        // On a CPU-only build the V2 CUDA entry answers with an error status that names CUDA; on a
        // GPU build it creates options. Either proves position 205 is CreateCUDAProviderOptions.
        let library = try library
        var options: ORTHandle?
        let status = library.function(.createCUDAProviderOptions, as: ORTSignature.CreateHandle.self)(&options)
        if let status {
            let message = library.function(.getErrorMessage, as: ORTSignature.GetErrorMessage.self)(status).map { String(cString: $0) } ?? ""
            library.function(.releaseStatus, as: ORTSignature.Release.self)(status)
            #expect(message.localizedCaseInsensitiveContains("cuda"), "\(message)")
        } else {
            #expect(options != nil)
            library.function(.releaseCUDAProviderOptions, as: ORTSignature.Release.self)(options)
        }
    }

    @Test func apiVersionMatchesTheLibrary() throws {
        let library = try library
        let minor = UInt32(library.version.split(separator: ".")[1])!
        #expect(library.apiVersion == minor)
    }
}
