import Foundation
#if canImport(Glibc)
import Glibc
#endif
import TernCore

/// A POSIX shared-memory object this process creates and maps, for `tern perf --shared-memory
/// system` (the client side of the system shared-memory extension). Unmapped and unlinked on deinit.
final class ClientSharedMemory: @unchecked Sendable {
    let key: String
    let bytes: UnsafeMutableRawBufferPointer

    init(key: String, byteSize: Int) throws {
        self.key = key
        shm_unlink(key)
        let fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw TernError.internalError("shm_open \(key): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(byteSize)) == 0 else {
            shm_unlink(key)
            throw TernError.internalError("cannot size shared memory \(key) to \(byteSize) bytes: \(String(cString: strerror(errno)))")
        }
        guard let address = mmap(nil, byteSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), address != MAP_FAILED else {
            shm_unlink(key)
            throw TernError.internalError("cannot map shared memory \(key): \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeMutableRawBufferPointer(start: address, count: byteSize)
    }

    deinit {
        munmap(bytes.baseAddress, bytes.count)
        shm_unlink(key)
    }

    /// Lays `tensors` out one after another, each at a 64-byte boundary, and writes them; returns
    /// each one's place (in a region registered under `region` over the whole object).
    static func layout(_ tensors: [Tensor]) -> (byteSize: Int, offsets: [Int]) {
        var offsets: [Int] = []
        var end = 0
        for tensor in tensors {
            offsets.append(end)
            end = (end + tensor.data.count + 63) / 64 * 64
        }
        return (max(end, 64), offsets)
    }

    func write(_ tensor: Tensor, at offset: Int) {
        tensor.data.withUnsafeBytes { source in
            if let base = source.baseAddress, source.count > 0 { (bytes.baseAddress! + offset).copyMemory(from: base, byteCount: source.count) }
        }
    }
}
