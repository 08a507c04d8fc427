/// The published 32-bit hashes experiments assign subjects with, so that an analyst can reproduce
/// any assignment offline (Python's `mmh3.hash(key, seed, signed=False)`, or FNV-1a 32 as
/// GrowthBook uses it).
public enum SubjectHash: String, Sendable, Codable, CaseIterable {
    /// MurmurHash3 x86_32 (Austin Appleby), as Unleash buckets with.
    case murmur3
    /// FNV-1a, 32 bits.
    case fnv1a

    /// The hash of the text's UTF-8 bytes (`seed` is used by murmur3 only).
    public func hash(_ text: String, seed: UInt32 = 0) -> UInt32 {
        var text = text
        return text.withUTF8 { hash(UnsafeRawBufferPointer($0), seed: seed) }
    }

    /// The hash of `bytes` (`seed` is used by murmur3 only).
    public func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        switch self {
        case .murmur3: return Self.murmur3(bytes, seed: seed)
        case .fnv1a: return Self.fnv1a(bytes)
        }
    }

    /// The hash of "prefix:key" without building that text (the request path calls this).
    public func hash(prefix: String, key: String) -> UInt32 {
        var (prefix, key) = (prefix, key)
        return prefix.withUTF8 { head in
            key.withUTF8 { tail in
                withUnsafeTemporaryAllocation(byteCount: head.count + 1 + tail.count, alignment: 1) { joined in
                    joined.copyMemory(from: UnsafeRawBufferPointer(head))
                    joined[head.count] = UInt8(ascii: ":")
                    UnsafeMutableRawBufferPointer(rebasing: joined[(head.count + 1)...]).copyMemory(from: UnsafeRawBufferPointer(tail))
                    return hash(UnsafeRawBufferPointer(joined))
                }
            }
        }
    }

    /// MurmurHash3_x86_32 of `bytes`.
    public static func murmur3(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { murmur3($0, seed: seed) }
    }

    /// MurmurHash3_x86_32 of `bytes`, read in place.
    public static func murmur3(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        let c1: UInt32 = 0xcc9e_2d51, c2: UInt32 = 0x1b87_3593
        var h = seed
        let blocks = bytes.count / 4
        for block in 0..<blocks {
            let i = block * 4
            var k = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            k &*= c1
            k = k << 15 | k >> 17
            k &*= c2
            h ^= k
            h = h << 13 | h >> 19
            h = h &* 5 &+ 0xe654_6b64
        }
        var k: UInt32 = 0
        let tail = blocks * 4
        switch bytes.count & 3 {
        case 3:
            k ^= UInt32(bytes[tail + 2]) << 16
            fallthrough
        case 2:
            k ^= UInt32(bytes[tail + 1]) << 8
            fallthrough
        case 1:
            k ^= UInt32(bytes[tail])
            k &*= c1
            k = k << 15 | k >> 17
            k &*= c2
            h ^= k
        default:
            break
        }
        h ^= UInt32(truncatingIfNeeded: bytes.count)
        h ^= h >> 16
        h &*= 0x85eb_ca6b
        h ^= h >> 13
        h &*= 0xc2b2_ae35
        h ^= h >> 16
        return h
    }

    /// FNV-1a 32 of `bytes`.
    public static func fnv1a(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { fnv1a($0) }
    }

    /// FNV-1a 32 of `bytes`, read in place.
    public static func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var h: UInt32 = 0x811c_9dc5
        for byte in bytes {
            h ^= UInt32(byte)
            h &*= 0x0100_0193
        }
        return h
    }

    /// FNV-1a, 64 bits: the metrics store's key for a request id (not for assignment).
    public static func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            h ^= UInt64(byte)
            h &*= 0x0000_0100_0000_01b3
        }
        return h
    }
}

/// Which variant a subject sees: its key is hashed with the experiment's salt into one of 10 000
/// buckets, and the buckets are dealt to the variants in order, in proportion to their weights.
/// Changing weights moves only the subjects whose bucket changes owner — for two variants, exactly
/// the weight that moved.
public struct Assigner: Sendable, Equatable {
    /// The number of buckets keys are hashed into: 10 000, so a weight moves in steps of 0.01 %.
    public static let buckets: UInt32 = 10_000
    /// The hash function keys are bucketed with.
    public let hash: SubjectHash
    /// The text put before each key ("salt:key") before hashing, so experiments bucket independently.
    public let salt: String
    /// Upper bucket bound (exclusive) of each variant, in order.
    public let bounds: [UInt32]

    /// `weights` are relative (any non-negative numbers, not all zero).
    public init(hash: SubjectHash, salt: String, weights: [Double]) {
        self.hash = hash
        self.salt = salt
        let total = weights.reduce(0, +)
        var running = 0.0
        bounds = weights.map { weight in
            running += weight
            return total > 0 ? UInt32((running / total * Double(Self.buckets)).rounded()) : 0
        }
    }

    /// The bucket (0..<10 000) of a key: hash("salt:key") mod 10 000.
    public func bucket(_ key: String) -> UInt32 {
        Self.bucket(key, hash: hash, salt: salt)
    }

    /// The bucket (0..<10 000) of `key` under `hash` and `salt`, without making an assigner.
    public static func bucket(_ key: String, hash: SubjectHash, salt: String) -> UInt32 {
        hash.hash(prefix: salt, key: key) % buckets
    }

    /// The index of the variant the key is assigned to.
    public func variant(for key: String) -> Int {
        variant(inBucket: bucket(key))
    }

    /// The index of the variant that owns a bucket.
    public func variant(inBucket bucket: UInt32) -> Int {
        bounds.firstIndex { bucket < $0 } ?? max(bounds.count - 1, 0)
    }
}
