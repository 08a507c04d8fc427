import CTernCUDA
import Foundation
import TernCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// NVIDIA's CUDA runtime (`libcudart.so`) loaded at run time, with Tern's own declarations of
/// the few entry points the CUDA shared-memory extension needs, so the binary builds and runs
/// where there is no CUDA (then `open` says why).
///
/// A client process allocates device memory, exports it with `cudaIpcGetMemHandle` and sends the
/// 64-byte handle; the server opens it with `cudaIpcOpenMemHandle` and copies tensors between
/// that memory and its own with `cudaMemcpy`.
public final class CUDARuntime: @unchecked Sendable {
    // @unchecked: the function pointers are set once in init; the CUDA runtime is thread-safe
    // (the current device is per thread, so every call sets it first).
    private typealias SetDevice = @convention(c) (Int32) -> Int32
    private typealias DeviceCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    private typealias CloseHandle = @convention(c) (UnsafeMutableRawPointer?) -> Int32
    private typealias Copy = @convention(c) (UnsafeMutableRawPointer?, UnsafeRawPointer?, Int, Int32) -> Int32
    private typealias ErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// The library file that was opened.
    public let path: String
    /// How many CUDA devices the runtime sees.
    public let deviceCount: Int
    private let handle: UnsafeMutableRawPointer
    private let setDevice: SetDevice
    private let openHandle: UnsafeMutableRawPointer
    private let closeHandle: CloseHandle
    private let copy: Copy
    private let errorString: ErrorString

    /// The names tried when no library is named: the CUDA 13 and 12 runtimes, then any.
    public static let defaultLibraries = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]

    /// cudaMemcpyKind values.
    enum CopyKind: Int32 {
        case hostToDevice = 1
        case deviceToHost = 2
    }

    /// cudaIpcMemLazyEnablePeerAccess: what Triton opens client handles with.
    private static let lazyEnablePeerAccess: UInt32 = 1

    /// Opens `path`, or the first of `defaultLibraries` that loads, and checks that it sees a
    /// CUDA device; throws a message saying why there is no usable CUDA otherwise.
    public static func open(_ path: String? = nil) throws(TernError) -> CUDARuntime {
        var reasons: [String] = []
        for candidate in path.map({ [$0] }) ?? defaultLibraries {
            guard let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) else {
                reasons.append(String(cString: dlerror()))
                continue
            }
            return try CUDARuntime(handle: handle, path: candidate)
        }
        throw .unavailable("the CUDA runtime cannot be loaded (\(reasons.joined(separator: "; ")))")
    }

    private init(handle: UnsafeMutableRawPointer, path: String) throws(TernError) {
        func symbol(_ name: String) throws(TernError) -> UnsafeMutableRawPointer {
            guard let pointer = dlsym(handle, name) else { throw .unavailable("\(path) has no \(name): not a CUDA runtime") }
            return pointer
        }
        do throws(TernError) {
            setDevice = unsafeBitCast(try symbol("cudaSetDevice"), to: SetDevice.self)
            let count = unsafeBitCast(try symbol("cudaGetDeviceCount"), to: DeviceCount.self)
            openHandle = try symbol("cudaIpcOpenMemHandle")
            closeHandle = unsafeBitCast(try symbol("cudaIpcCloseMemHandle"), to: CloseHandle.self)
            copy = unsafeBitCast(try symbol("cudaMemcpy"), to: Copy.self)
            errorString = unsafeBitCast(try symbol("cudaGetErrorString"), to: ErrorString.self)
            var devices: Int32 = 0
            let status = count(&devices)
            let describe = errorString
            guard status == 0, devices > 0 else {
                let why = status == 0 ? "no CUDA device" : describe(status).map { String(cString: $0) } ?? "CUDA error \(status)"
                throw .unavailable("the CUDA runtime \(path) sees no GPU: \(why)")
            }
            deviceCount = Int(devices)
        } catch {
            dlclose(handle)
            throw error
        }
        self.handle = handle
        self.path = path
    }

    deinit { dlclose(handle) }

    private func check(_ status: Int32, _ what: String) throws(TernError) {
        guard status != 0 else { return }
        let text = errorString(status).map { String(cString: $0) } ?? "CUDA error \(status)"
        throw .invalidArgument("\(what): \(text)")
    }

    private func use(_ device: Int) throws(TernError) {
        guard device >= 0, device < deviceCount else {
            throw .invalidArgument("CUDA device \(device) does not exist (this server sees \(deviceCount))")
        }
        try check(setDevice(Int32(device)), "cannot use CUDA device \(device)")
    }

    /// Opens a client's exported allocation on `device`; the pointer stays valid until `close`.
    func open(handle bytes: Data, device: Int) throws(TernError) -> UnsafeMutableRawPointer {
        guard bytes.count == Int(CTERN_CUDA_IPC_HANDLE_SIZE) else {
            throw .invalidArgument("a CUDA IPC handle is \(CTERN_CUDA_IPC_HANDLE_SIZE) bytes, not \(bytes.count)")
        }
        try use(device)
        var pointer: UnsafeMutableRawPointer?
        let status = bytes.withUnsafeBytes { raw in
            ctern_cuda_ipc_open_mem_handle(openHandle, &pointer, raw.baseAddress, Self.lazyEnablePeerAccess)
        }
        try check(status, "Unable to open the CUDA IPC handle on device \(device)")
        guard let pointer else { throw .invalidArgument("cudaIpcOpenMemHandle gave no pointer on device \(device)") }
        return pointer
    }

    /// Releases what `open` opened (best effort: the region is gone either way).
    func close(_ pointer: UnsafeMutableRawPointer, device: Int) {
        try? use(device)
        _ = closeHandle(pointer)
    }

    /// Copies `count` bytes between host and device memory on `device`.
    func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int, _ kind: CopyKind, device: Int) throws(TernError) {
        guard count > 0 else { return }
        try use(device)
        try check(copy(destination, source, count, kind.rawValue), kind == .deviceToHost ? "cannot read CUDA memory" : "cannot write CUDA memory")
    }
}
