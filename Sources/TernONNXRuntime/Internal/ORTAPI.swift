// The part of ONNX Runtime's C API that Tern calls, declared here rather than imported from a
// header. `OrtGetApiBase()->GetApi(version)` returns a table of function pointers whose order is a
// published, append-only ABI; each entry is called by its position in that table. All positions
// live in `ORTFunction`, and `ORTAPITests` checks several of them against the real library: an
// off-by-one would silently call a different function.

/// Opaque ORT handles (OrtEnv*, OrtSession*, OrtValue*, ...).
typealias ORTHandle = OpaquePointer
/// `OrtStatus*`: nil means success.
typealias ORTStatusPointer = OpaquePointer?

/// Positions of the entries Tern uses in the `OrtApi` function table.
enum ORTFunction: Int, CaseIterable {
    case createStatus = 0
    case getErrorCode = 1
    case getErrorMessage = 2
    case createEnvWithCustomLogger = 4
    case createSession = 7
    case run = 9
    case createSessionOptions = 10
    case setSessionExecutionMode = 13
    case setSessionLogSeverityLevel = 22
    case setSessionGraphOptimizationLevel = 23
    case setIntraOpNumThreads = 24
    case setInterOpNumThreads = 25
    case sessionGetInputCount = 30
    case sessionGetOutputCount = 31
    case sessionGetInputTypeInfo = 33
    case sessionGetOutputTypeInfo = 34
    case sessionGetInputName = 36
    case sessionGetOutputName = 37
    case createTensorAsOrtValue = 48
    case createTensorWithDataAsOrtValue = 49
    case getTensorMutableData = 51
    case fillStringTensor = 52
    case getStringTensorDataLength = 53
    case getStringTensorContent = 54
    case castTypeInfoToTensorInfo = 55
    case getOnnxTypeFromTypeInfo = 56
    case getTensorElementType = 60
    case getDimensionsCount = 61
    case getDimensions = 62
    case getTensorTypeAndShape = 65
    case createCpuMemoryInfo = 69
    case allocatorFree = 76
    case getAllocatorWithDefaultOptions = 78
    case releaseEnv = 92
    case releaseStatus = 93
    case releaseMemoryInfo = 94
    case releaseSession = 95
    case releaseValue = 96
    case releaseTypeInfo = 98
    case releaseTensorTypeAndShapeInfo = 99
    case releaseSessionOptions = 100
    case getAvailableProviders = 125
    case releaseAvailableProviders = 126
    case addSessionConfigEntry = 130
    case sessionOptionsAppendExecutionProviderTensorRTV2 = 170
    case createTensorRTProviderOptions = 171
    case updateTensorRTProviderOptions = 172
    case releaseTensorRTProviderOptions = 174
    case sessionOptionsAppendExecutionProviderCUDAV2 = 204
    case createCUDAProviderOptions = 205
    case updateCUDAProviderOptions = 206
    case releaseCUDAProviderOptions = 208
    /// `SessionOptionsAppendExecutionProvider` (by name, with string options; the entry is from API
    /// 12, but "OpenVINO" by name is accepted from 1.16): OpenVINO.
    case sessionOptionsAppendExecutionProvider = 216

    /// The oldest API version whose table has every entry above (1.11 added the CUDA V2 entries;
    /// the append by name is checked against the library's version before use).
    static let minimumAPIVersion: UInt32 = 11

    /// The API version that added each entry past the minimum.
    var addedInVersion: UInt32 {
        switch self {
        case .sessionOptionsAppendExecutionProvider: 16
        default: Self.minimumAPIVersion
        }
    }
}

/// C signatures of those entries.
enum ORTSignature {
    typealias CString = UnsafePointer<CChar>
    typealias Out<T> = UnsafeMutablePointer<T>

    typealias GetApi = @convention(c) (UInt32) -> UnsafeRawPointer?
    typealias GetVersionString = @convention(c) () -> CString?
    typealias GetApiBase = @convention(c) () -> UnsafePointer<UnsafeRawPointer?>?

    typealias LoggingFunction = @convention(c) (
        UnsafeMutableRawPointer?, Int32, CString?, CString?, CString?, CString?
    ) -> Void

    typealias CreateStatus = @convention(c) (Int32, CString) -> ORTStatusPointer
    typealias GetErrorCode = @convention(c) (ORTHandle) -> Int32
    typealias GetErrorMessage = @convention(c) (ORTHandle) -> CString?
    typealias Release = @convention(c) (ORTHandle?) -> Void

    typealias CreateEnvWithCustomLogger = @convention(c) (
        LoggingFunction, UnsafeMutableRawPointer?, Int32, CString, Out<ORTHandle?>
    ) -> ORTStatusPointer
    typealias CreateSession = @convention(c) (ORTHandle, CString, ORTHandle, Out<ORTHandle?>) -> ORTStatusPointer
    typealias Run = @convention(c) (
        ORTHandle, ORTHandle?, UnsafePointer<CString?>, UnsafePointer<ORTHandle?>, Int,
        UnsafePointer<CString?>, Int, Out<ORTHandle?>
    ) -> ORTStatusPointer
    typealias CreateHandle = @convention(c) (Out<ORTHandle?>) -> ORTStatusPointer
    typealias SetInt = @convention(c) (ORTHandle, Int32) -> ORTStatusPointer
    typealias GetCount = @convention(c) (ORTHandle, Out<Int>) -> ORTStatusPointer
    typealias GetTypeInfo = @convention(c) (ORTHandle, Int, Out<ORTHandle?>) -> ORTStatusPointer
    typealias GetName = @convention(c) (
        ORTHandle, Int, UnsafeMutableRawPointer, Out<UnsafeMutablePointer<CChar>?>
    ) -> ORTStatusPointer
    typealias CreateTensorAsOrtValue = @convention(c) (
        UnsafeMutableRawPointer, UnsafePointer<Int64>, Int, Int32, Out<ORTHandle?>
    ) -> ORTStatusPointer
    typealias CreateTensorWithData = @convention(c) (
        ORTHandle, UnsafeMutableRawPointer, Int, UnsafePointer<Int64>, Int, Int32, Out<ORTHandle?>
    ) -> ORTStatusPointer
    typealias GetTensorMutableData = @convention(c) (ORTHandle, Out<UnsafeMutableRawPointer?>) -> ORTStatusPointer
    typealias FillStringTensor = @convention(c) (ORTHandle, UnsafePointer<CString?>, Int) -> ORTStatusPointer
    typealias GetStringTensorDataLength = @convention(c) (ORTHandle, Out<Int>) -> ORTStatusPointer
    typealias GetStringTensorContent = @convention(c) (
        ORTHandle, UnsafeMutableRawPointer, Int, Out<Int>, Int
    ) -> ORTStatusPointer
    typealias CastTypeInfoToTensorInfo = @convention(c) (ORTHandle, Out<ORTHandle?>) -> ORTStatusPointer
    typealias GetInt32 = @convention(c) (ORTHandle, Out<Int32>) -> ORTStatusPointer
    typealias GetDimensions = @convention(c) (ORTHandle, Out<Int64>, Int) -> ORTStatusPointer
    typealias GetTensorTypeAndShape = @convention(c) (ORTHandle, Out<ORTHandle?>) -> ORTStatusPointer
    typealias CreateCpuMemoryInfo = @convention(c) (Int32, Int32, Out<ORTHandle?>) -> ORTStatusPointer
    typealias AllocatorFree = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer?) -> ORTStatusPointer
    typealias GetAllocator = @convention(c) (Out<UnsafeMutableRawPointer?>) -> ORTStatusPointer
    typealias GetAvailableProviders = @convention(c) (
        Out<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, Out<Int32>
    ) -> ORTStatusPointer
    typealias ReleaseAvailableProviders = @convention(c) (
        UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, Int32
    ) -> ORTStatusPointer
    typealias AddConfigEntry = @convention(c) (ORTHandle, CString, CString) -> ORTStatusPointer
    typealias AppendProvider = @convention(c) (ORTHandle, ORTHandle) -> ORTStatusPointer
    typealias AppendProviderByName = @convention(c) (
        ORTHandle, CString, UnsafePointer<CString?>, UnsafePointer<CString?>, Int
    ) -> ORTStatusPointer
    typealias UpdateProviderOptions = @convention(c) (
        ORTHandle, UnsafePointer<CString?>, UnsafePointer<CString?>, Int
    ) -> ORTStatusPointer
}

/// `ONNXTensorElementDataType` values.
enum ORTElementType: Int32 {
    case undefined = 0, float, uint8, int8, uint16, int16, int32, int64, string, bool, float16, double
    case uint32, uint64, complex64, complex128, bfloat16
}

/// `OrtLoggingLevel` values.
enum ORTLoggingLevel: Int32 {
    case verbose = 0, info, warning, error, fatal
}

/// `GraphOptimizationLevel` values.
enum ORTGraphOptimizationLevel: Int32 {
    case disableAll = 0, basic = 1, extended = 2, all = 99
}
