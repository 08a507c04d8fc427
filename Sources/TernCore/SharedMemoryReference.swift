/// A tensor's place in a registered region, from its `shared_memory_region`,
/// `shared_memory_byte_size` and `shared_memory_offset` parameters.
public struct SharedMemoryReference: Sendable, Hashable {
    /// Name of the registered shared-memory region the tensor lives in.
    public var region: String
    /// Length of the tensor's bytes in the region.
    public var byteSize: Int
    /// Byte offset of the tensor's first byte from the start of the region.
    public var offset: Int

    /// Makes a reference to `byteSize` bytes at `offset` in the region named `region`.
    public init(region: String, byteSize: Int, offset: Int = 0) {
        self.region = region
        self.byteSize = byteSize
        self.offset = offset
    }

    /// The reference the parameters hold, nil when they name no region.
    public init?(parameters: [String: InferParameter], context: String) throws(TernError) {
        guard let value = parameters["shared_memory_region"] else { return nil }
        guard let region = value.stringValue else {
            throw .invalidArgument("\(context): shared_memory_region must be a string")
        }
        guard let size = parameters["shared_memory_byte_size"]?.integerValue, size >= 0, size <= Int64(Int.max) else {
            throw .invalidArgument("\(context): shared_memory_region needs a non-negative integer shared_memory_byte_size")
        }
        var offset: Int64 = 0
        if let raw = parameters["shared_memory_offset"] {
            guard let value = raw.integerValue, value >= 0, value <= Int64(Int.max) else {
                throw .invalidArgument("\(context): shared_memory_offset must be a non-negative integer")
            }
            offset = value
        }
        self.init(region: region, byteSize: Int(size), offset: Int(offset))
    }

    /// The tensor parameters that name this place (what a client sends).
    public var parameters: [String: InferParameter] {
        ["shared_memory_region": .string(region), "shared_memory_byte_size": .int64(Int64(byteSize)), "shared_memory_offset": .int64(Int64(offset))]
    }

    /// The requested outputs that go to shared memory, by name.
    public static func placements(of outputs: [RequestedOutput]) throws(TernError) -> [String: SharedMemoryReference] {
        var placements: [String: SharedMemoryReference] = [:]
        for output in outputs {
            if let place = try SharedMemoryReference(parameters: output.parameters, context: "output '\(output.name)'") {
                placements[output.name] = place
            }
        }
        return placements
    }
}
