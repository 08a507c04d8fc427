import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import TernCore

/// Triton's system shared-memory extension: a client on the same machine registers a POSIX
/// shared-memory object (`shm_open` key, offset, size) under a name, then names a range of it in a
/// tensor's parameters instead of sending the tensor's bytes. Inputs are read where they lie (ONNX
/// Runtime runs on the mapped pages, no copy); outputs are copied into the client's range and the
/// response carries only their shape.
///
/// A region stays mapped while any request still uses it, so unregistering during an inference is
/// safe: the mapping goes when the last tensor viewing it does.
///
/// CUDA shared memory (Triton's other extension) works the same way with device memory a client
/// exported through `cudaIpcGetMemHandle`: inputs are copied from the device into host memory
/// for the model and outputs copied back (`CUDARuntime`).
public final class SharedMemoryRegistry: Sendable {
    private let regions = Mutex<[String: Entry]>([:])
    /// Whether clients may register regions (`--allow-client-shm`). A registered region gives the
    /// client read and write access to memory the server maps, so a server reached from other
    /// hosts keeps this off (Triton's default too).
    public let allowsRegistration: Bool
    /// The CUDA runtime CUDA regions are opened with; nil when there is none.
    public let cuda: CUDARuntime?
    /// Why CUDA regions are refused when `cuda` is nil.
    public let cudaUnavailableReason: String

    /// A registered region: system shared memory or CUDA device memory (one namespace, as in Triton).
    enum Entry {
        case system(Region)
        case cuda(CUDARegion)
    }

    /// Makes an empty registry that accepts client registrations only when `allowsRegistration`
    /// is true, and CUDA regions only with a `cuda` runtime (`cudaUnavailableReason` says why not).
    public init(allowsRegistration: Bool = true, cuda: CUDARuntime? = nil, cudaUnavailableReason: String = "no CUDA runtime was loaded") {
        self.allowsRegistration = allowsRegistration
        self.cuda = cuda
        self.cudaUnavailableReason = cudaUnavailableReason
    }

    /// Why registration is refused when it is off.
    public static let registrationRefusal =
        "client shared memory is disabled on this server: start it with --allow-client-shm to let local clients register regions"

    /// Why a CUDA shared-memory region is refused when there is no CUDA runtime (both frontends say the same).
    public var cudaRefusal: String {
        "CUDA shared memory is not available on this server: \(cudaUnavailableReason); register system shared memory instead"
    }

    /// What status reports of a CUDA region.
    public struct CUDARegionStatus: Sendable, Hashable {
        /// The name the client registered the region under.
        public var name: String
        /// The CUDA device the memory is on.
        public var deviceID: Int
        /// The region's length, in bytes.
        public var byteSize: UInt64
    }

    /// A client's device allocation opened through its IPC handle; closed when the last
    /// reference (registry or request) goes.
    final class CUDARegion: @unchecked Sendable {
        // @unchecked: the pointer never changes and lives exactly as long as the object.
        let status: CUDARegionStatus
        let runtime: CUDARuntime
        let base: UnsafeMutableRawPointer

        init(name: String, handle: Data, deviceID: Int, byteSize: UInt64, runtime: CUDARuntime) throws(TernError) {
            guard byteSize > 0, byteSize <= UInt64(Int.max) else {
                throw .invalidArgument("CUDA shared memory region '\(name)': byte_size must be positive")
            }
            base = try runtime.open(handle: handle, device: deviceID)
            self.runtime = runtime
            status = CUDARegionStatus(name: name, deviceID: deviceID, byteSize: byteSize)
        }

        deinit { runtime.close(base, device: status.deviceID) }

        func check(offset: Int, byteSize: Int) throws(TernError) {
            guard offset >= 0, byteSize >= 0, offset <= Int(status.byteSize), byteSize <= Int(status.byteSize) - offset else {
                throw .invalidArgument(
                    "Invalid offset + byte size for shared memory region: '\(status.name)' (offset \(offset) + byte size \(byteSize) > region size \(status.byteSize))")
            }
        }
    }

    /// What status reports of a region.
    public struct RegionStatus: Sendable, Hashable {
        /// The name the client registered the region under.
        public var name: String
        /// The `shm_open` key of the POSIX shared-memory object holding the region.
        public var key: String
        /// Where the region starts in that object, in bytes.
        public var offset: UInt64
        /// The region's length, in bytes.
        public var byteSize: UInt64
    }

    /// One mapped region; unmapped when the last reference (registry or tensor) goes. Unchecked
    /// Sendable: its pointers never change and the mapping lives exactly as long as the object.
    final class Region: @unchecked Sendable {
        let status: RegionStatus
        /// The mapping starts at the page holding `offset`; `base` is the registered offset in it.
        private let mapping: UnsafeMutableRawPointer
        private let mappingLength: Int
        let base: UnsafeMutableRawPointer

        init(name: String, key: String, offset: UInt64, byteSize: UInt64) throws(TernError) {
            guard byteSize > 0, byteSize <= UInt64(Int.max), offset <= UInt64(Int.max) - byteSize else {
                throw .invalidArgument("shared memory region '\(name)': byte_size must be positive and offset + byte_size must fit in memory")
            }
            let fd = shm_open(key, O_RDWR, 0)
            guard fd >= 0 else {
                throw .invalidArgument("Unable to open shared memory region: '\(key)': \(String(cString: strerror(errno)))")
            }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                throw .invalidArgument("Unable to read the size of shared memory region '\(key)': \(String(cString: strerror(errno)))")
            }
            guard UInt64(info.st_size) >= offset + byteSize else {
                throw .invalidArgument(
                    "Invalid shared memory region: '\(key)' holds \(info.st_size) bytes, fewer than offset \(offset) + byte_size \(byteSize)")
            }
            // mmap wants a page-aligned file offset; any offset is accepted by mapping from its page.
            let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
            let start = offset / page * page
            let length = Int(offset - start + byteSize)
            let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(start))
            guard let address, address != MAP_FAILED else {
                throw .invalidArgument("Unable to map shared memory region '\(key)': \(String(cString: strerror(errno)))")
            }
            status = RegionStatus(name: name, key: key, offset: offset, byteSize: byteSize)
            mapping = address
            mappingLength = length
            base = address + Int(offset - start)
        }

        deinit { munmap(mapping, mappingLength) }

        /// `byteSize` bytes at `offset` of the region, or the error Triton gives for a range outside it.
        func range(offset: Int, byteSize: Int) throws(TernError) -> UnsafeMutableRawBufferPointer {
            guard offset >= 0, byteSize >= 0, offset <= Int(status.byteSize), byteSize <= Int(status.byteSize) - offset else {
                throw .invalidArgument(
                    "Invalid offset + byte size for shared memory region: '\(status.name)' (offset \(offset) + byte size \(byteSize) > region size \(status.byteSize))")
            }
            return UnsafeMutableRawBufferPointer(start: base + offset, count: byteSize)
        }
    }

    // MARK: Registration

    /// Maps `byteSize` bytes at `offset` of the shared-memory object `key` and registers them as `name`. Throws when
    /// registration is off, the name or key is empty, the name is taken, or the object cannot be opened or mapped.
    public func register(name: String, key: String, offset: UInt64, byteSize: UInt64) throws(TernError) {
        guard allowsRegistration else { throw .permissionDenied(Self.registrationRefusal) }
        guard !name.isEmpty else { throw .invalidArgument("a shared memory region needs a name") }
        guard !key.isEmpty else { throw .invalidArgument("shared memory region '\(name)' needs a key") }
        try add(name) { () throws(TernError) in .system(try Region(name: name, key: key, offset: offset, byteSize: byteSize)) }
    }

    /// Opens the client's CUDA allocation exported as `handle` (the 64 bytes of a
    /// `cudaIpcMemHandle_t`) on `deviceID` and registers its first `byteSize` bytes as `name`.
    /// Throws when registration is off, there is no CUDA runtime, the name is taken, or CUDA
    /// cannot open the handle.
    public func registerCUDA(name: String, handle: Data, deviceID: Int64, byteSize: UInt64) throws(TernError) {
        guard allowsRegistration else { throw .permissionDenied(Self.registrationRefusal) }
        guard let cuda else { throw TernError(.unimplemented, cudaRefusal) }
        guard !name.isEmpty else { throw .invalidArgument("a shared memory region needs a name") }
        guard deviceID >= 0, deviceID <= Int64(Int32.max) else { throw .invalidArgument("CUDA shared memory region '\(name)': device_id must be a device index, not \(deviceID)") }
        try add(name) { () throws(TernError) in
            .cuda(try CUDARegion(name: name, handle: handle, deviceID: Int(deviceID), byteSize: byteSize, runtime: cuda))
        }
    }

    /// Adds the region `make` opens under `name` unless the name is taken (checked before and after opening).
    private func add(_ name: String, _ make: () throws(TernError) -> Entry) throws(TernError) {
        if regions.withLock({ $0[name] != nil }) {
            throw TernError(.alreadyExists, "shared memory region '\(name)' already in manager")
        }
        let entry = try make()
        let added = regions.withLock { regions in
            guard regions[name] == nil else { return false }
            regions[name] = entry
            return true
        }
        if !added { throw TernError(.alreadyExists, "shared memory region '\(name)' already in manager") }
    }

    /// Forgets the system region `name`, or every system region when nil; an unknown name is not
    /// an error (as in Triton). Requests already using a region keep its mapping until they finish.
    public func unregister(name: String?) {
        remove(name) { if case .system = $0 { true } else { false } }
    }

    /// Forgets the CUDA region `name`, or every CUDA region when nil; as `unregister`.
    public func unregisterCUDA(name: String?) {
        remove(name) { if case .cuda = $0 { true } else { false } }
    }

    private func remove(_ name: String?, where kind: (Entry) -> Bool) {
        // The entries leave the lock before they are released (closing a CUDA handle may block).
        let removed: [Entry] = regions.withLock { regions in
            if let name {
                guard let entry = regions[name], kind(entry) else { return [] }
                regions[name] = nil
                return [entry]
            }
            let names = regions.filter { kind($0.value) }.map(\.key)
            return names.compactMap { regions.removeValue(forKey: $0) }
        }
        withExtendedLifetime(removed) {}
    }

    /// The registered system regions (the one named, or all, sorted by name).
    public func status(name: String?) throws(TernError) -> [RegionStatus] {
        let all = regions.withLock { regions in regions.values.compactMap { entry -> Region? in if case .system(let r) = entry { r } else { nil } } }
        let found = all.filter { name == nil || $0.status.name == name }
        if let name, found.isEmpty { throw .notFound("Unable to find system shared memory region: '\(name)'") }
        return found.map(\.status).sorted { $0.name < $1.name }
    }

    /// The registered CUDA regions (the one named, or all, sorted by name).
    public func cudaStatus(name: String?) throws(TernError) -> [CUDARegionStatus] {
        let all = regions.withLock { regions in regions.values.compactMap { entry -> CUDARegion? in if case .cuda(let r) = entry { r } else { nil } } }
        let found = all.filter { name == nil || $0.status.name == name }
        if let name, found.isEmpty { throw .notFound("Unable to find cuda shared memory region: '\(name)'") }
        return found.map(\.status).sorted { $0.name < $1.name }
    }

    private func entry(_ name: String) throws(TernError) -> Entry {
        guard let entry = regions.withLock({ $0[name] }) else {
            throw .notFound("Unable to find shared memory region: '\(name)'")
        }
        return entry
    }

    // MARK: Tensors

    /// The bytes of an input that lies in shared memory, viewed in place. The view keeps the
    /// region mapped until it is released.
    public func inputData(_ reference: SharedMemoryReference) throws(TernError) -> Data {
        let region: Region
        switch try entry(reference.region) {
        case .system(let system): region = system
        case .cuda(let device):
            // The model reads host memory: the bytes are copied off the device.
            try device.check(offset: reference.offset, byteSize: reference.byteSize)
            guard reference.byteSize > 0 else { return Data() }
            let target = UnsafeMutableRawPointer.allocate(byteCount: reference.byteSize, alignment: 64)
            do throws(TernError) {
                try device.runtime.copy(to: target, from: device.base + reference.offset, count: reference.byteSize, .deviceToHost, device: device.status.deviceID)
            } catch {
                target.deallocate()
                throw error
            }
            return Data(bytesNoCopy: target, count: reference.byteSize, deallocator: .custom { pointer, _ in pointer.deallocate() })
        }
        let range = try region.range(offset: reference.offset, byteSize: reference.byteSize)
        guard let start = range.baseAddress, range.count > 0 else { return Data() }
        return Data(bytesNoCopy: start, count: range.count, deallocator: .custom { _, _ in withExtendedLifetime(region) {} })
    }

    /// Copies the response's outputs that the request placed in shared memory into their ranges.
    public func write(outputsOf response: InferenceResponse, placements: [String: SharedMemoryReference]) throws(TernError) {
        for (name, place) in placements {
            if let tensor = response.output(named: name) { try write(tensor, to: place) }
        }
    }

    /// Copies an output into the range the client named for it.
    public func write(_ tensor: Tensor, to reference: SharedMemoryReference) throws(TernError) {
        guard tensor.data.count <= reference.byteSize else {
            throw .invalidArgument(
                "shared memory size specified with the request for output '\(tensor.name)' (\(reference.byteSize) bytes) should be at least \(tensor.data.count) bytes to hold the results")
        }
        switch try entry(reference.region) {
        case .system(let region):
            let range = try region.range(offset: reference.offset, byteSize: reference.byteSize)
            tensor.data.withUnsafeBytes { bytes in
                if let source = bytes.baseAddress, bytes.count > 0 { range.baseAddress!.copyMemory(from: source, byteCount: bytes.count) }
            }
        case .cuda(let device):
            try device.check(offset: reference.offset, byteSize: reference.byteSize)
            let failure: TernError? = tensor.data.withUnsafeBytes { bytes in
                guard let source = bytes.baseAddress else { return nil }
                do throws(TernError) {
                    try device.runtime.copy(to: device.base + reference.offset, from: source, count: bytes.count, .hostToDevice, device: device.status.deviceID)
                    return nil
                } catch { return error }
            }
            if let failure { throw failure }
        }
    }
}
