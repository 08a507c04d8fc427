/// A short digest of a text that is the same on every run and machine (FNV-1a, 64 bits, in hex):
/// for names derived from paths and for remembering which files a decision was made from. Not
/// for security.
public enum StableDigest {
    /// The FNV-1a 64-bit hash of the text's UTF-8 bytes, as lowercase hex without leading zeros.
    public static func hex(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}
