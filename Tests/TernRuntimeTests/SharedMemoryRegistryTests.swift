import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TernCore
@testable import TernRuntime

/// Registered regions are read and written in place, and stay mapped while a tensor views them.
@Suite struct SharedMemoryRegistryTests {
    /// A shared-memory object of `size` bytes, as a client creates it, mapped here too.
    final class ClientRegion {
        let key = "/tern-unit-\(UInt32.random(in: 0...UInt32.max))"
        let bytes: UnsafeMutableRawBufferPointer

        init(size: Int) throws {
            let fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0o600)
            try #require(fd >= 0)
            defer { close(fd) }
            try #require(ftruncate(fd, off_t(size)) == 0)
            let address = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
            try #require(address != MAP_FAILED)
            bytes = UnsafeMutableRawBufferPointer(start: address, count: size)
        }

        deinit {
            munmap(bytes.baseAddress, bytes.count)
            shm_unlink(key)
        }
    }

    /// How many times this process maps the object `key`.
    static func mappings(_ key: String) throws -> Int {
        // /proc files report size 0, so read to the end rather than by size.
        let maps = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/maps")).readToEnd() ?? Data()
        return String(decoding: maps, as: UTF8.self).split(separator: "\n").filter { $0.hasSuffix("/dev/shm" + key) }.count
    }

    @Test func inputsAreViewedInPlaceAndOutputsWrittenIntoTheirRange() throws {
        let client = try ClientRegion(size: 8192)
        let registry = SharedMemoryRegistry()
        // An offset mmap could not take directly (not a page multiple).
        try registry.register(name: "r", key: client.key, offset: 4100, byteSize: 64)
        for i in 0..<16 { client.bytes.storeBytes(of: Float(i), toByteOffset: 4100 + 4 * i, as: Float.self) }

        let data = try registry.inputData(SharedMemoryReference(region: "r", byteSize: 32, offset: 16))
        let tensor = Tensor(name: "x", dataType: .fp32, shape: [8], data: data)
        #expect(try tensor.values(as: Float.self) == (4..<12).map(Float.init))
        // A change the client makes afterwards shows through: the tensor is a view, not a copy.
        client.bytes.storeBytes(of: Float(-1), toByteOffset: 4100 + 16, as: Float.self)
        #expect(try tensor.values(as: Float.self).first == -1)

        let output = Tensor(name: "y", shape: [2], values: [Float(7), Float(8)])
        try registry.write(output, to: SharedMemoryReference(region: "r", byteSize: 8, offset: 56))
        #expect(client.bytes.load(fromByteOffset: 4100 + 56, as: Float.self) == 7)
        #expect(client.bytes.load(fromByteOffset: 4100 + 60, as: Float.self) == 8)
    }

    @Test func rangesOutsideTheRegionAndShortOutputRangesAreRefused() throws {
        let client = try ClientRegion(size: 4096)
        let registry = SharedMemoryRegistry()
        try registry.register(name: "r", key: client.key, offset: 0, byteSize: 64)
        #expect(throws: TernError.self) { try registry.inputData(SharedMemoryReference(region: "r", byteSize: 16, offset: 56)) }
        #expect(throws: TernError.self) { try registry.inputData(SharedMemoryReference(region: "r", byteSize: Int.max, offset: 1)) }
        #expect(throws: TernError.self) { try registry.inputData(SharedMemoryReference(region: "other", byteSize: 4)) }
        let output = Tensor(name: "y", shape: [4], values: [Float](repeating: 1, count: 4))
        let short = #expect(throws: TernError.self) { try registry.write(output, to: SharedMemoryReference(region: "r", byteSize: 8)) }
        #expect(short?.message.contains("should be at least 16 bytes") == true)
        #expect(throws: TernError.self) { try registry.register(name: "r", key: client.key, offset: 0, byteSize: 64) }
        #expect(throws: TernError.self) { try registry.register(name: "big", key: client.key, offset: 0, byteSize: 4097) }
        #expect(throws: TernError.self) { try registry.register(name: "none", key: client.key + "-missing", offset: 0, byteSize: 8) }
        #expect(try registry.status(name: nil).map(\.name) == ["r"])
    }

    @Test func aRegionStaysMappedWhileATensorViewsItAfterUnregistering() throws {
        let client = try ClientRegion(size: 4096)
        let registry = SharedMemoryRegistry()
        try registry.register(name: "r", key: client.key, offset: 0, byteSize: 4096)
        client.bytes.storeBytes(of: UInt32(42), toByteOffset: 0, as: UInt32.self)
        // 64 bytes: Data copies views of up to 14 bytes into itself (and lets the region go at once).
        var data: Data? = try registry.inputData(SharedMemoryReference(region: "r", byteSize: 64))
        registry.unregister(name: nil)
        #expect(throws: TernError.self) { try registry.status(name: "r") }
        // Two mappings: the client's own and the registry's, kept alive by the view.
        #expect(try Self.mappings(client.key) == 2)
        #expect(data?.withUnsafeBytes { $0.load(as: UInt32.self) } == 42)
        data = nil
        #expect(try Self.mappings(client.key) == 1)
    }

    @Test func referencesAreReadFromTensorParameters() throws {
        #expect(try SharedMemoryReference(parameters: [:], context: "input 'x'") == nil)
        let place = try SharedMemoryReference(
            parameters: ["shared_memory_region": .string("r"), "shared_memory_byte_size": .int64(64), "shared_memory_offset": .uint64(8)],
            context: "input 'x'")
        #expect(place == SharedMemoryReference(region: "r", byteSize: 64, offset: 8))
        #expect(try SharedMemoryReference(parameters: place!.parameters, context: "x") == place)
        #expect(throws: TernError.self) { try SharedMemoryReference(parameters: ["shared_memory_region": .string("r")], context: "input 'x'") }
        #expect(throws: TernError.self) {
            try SharedMemoryReference(parameters: ["shared_memory_region": .int64(1), "shared_memory_byte_size": .int64(4)], context: "input 'x'")
        }
    }
}
