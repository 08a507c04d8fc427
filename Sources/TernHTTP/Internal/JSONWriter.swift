import NIOCore

/// Writes JSON straight into a ByteBuffer. Foundation's JSONSerialization costs tens of
/// microseconds per small document on Linux, more than the model itself for small models, so the
/// inference response path writes its JSON by hand: keys known at compile time are copied as they
/// are, strings are checked and copied in one pass over their UTF-8, integers are formatted in
/// place, and the comma state of the open containers is a bit stack (no array to grow).
struct JSONWriter {
    var buffer: ByteBuffer
    /// Bit `depth` says whether the container open at that depth already holds a value; bit 0 is
    /// the top level. The writers of this module nest a few levels; 63 is the limit.
    private var written: UInt64 = 0
    private var depth = 0

    init(buffer: ByteBuffer) { self.buffer = buffer }

    mutating func beginObject() { open(UInt8(ascii: "{")) }
    mutating func endObject() { close(UInt8(ascii: "}")) }
    mutating func beginArray() { open(UInt8(ascii: "[")) }
    mutating func endArray() { close(UInt8(ascii: "]")) }

    /// An object key written in the source: plain ASCII that needs no escaping.
    mutating func key(_ key: StaticString) {
        let comma = separate()
        let count = key.utf8CodeUnitCount
        put(count + 4) { out in
            var at = 0
            if comma { out[0] = UInt8(ascii: ","); at = 1 }
            out[at] = UInt8(ascii: "\"")
            UnsafeMutableRawBufferPointer(rebasing: out[(at + 1)...]).copyMemory(from: UnsafeRawBufferPointer(start: key.utf8Start, count: count))
            out[at + 1 + count] = UInt8(ascii: "\"")
            out[at + 2 + count] = UInt8(ascii: ":")
            return at + 3 + count
        }
        valueFollows()
    }

    /// An object key from data (checked and escaped like a string value).
    mutating func dynamicKey(_ key: String) {
        writeString(key, comma: separate())
        buffer.writeInteger(UInt8(ascii: ":"))
        valueFollows()
    }

    mutating func string(_ value: String) { writeString(value, comma: separate()) }

    mutating func raw(_ text: String) {
        if separate() { buffer.writeInteger(UInt8(ascii: ",")) }
        buffer.writeString(text)
    }

    mutating func bool(_ value: Bool) {
        if separate() { buffer.writeInteger(UInt8(ascii: ",")) }
        buffer.writeStaticString(value ? "true" : "false")
    }

    mutating func integer<T: BinaryInteger>(_ value: T) { writeDecimal(value, comma: separate(), quoted: false) }

    /// An integer as a JSON string (Triton's `model_version` is a string holding a number).
    mutating func quotedInteger<T: BinaryInteger>(_ value: T) { writeDecimal(value, comma: separate(), quoted: true) }

    /// Shortest text that reads back as the same value; NaN and infinities as Python's json writes them.
    mutating func number<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T) {
        if value.isNaN { raw("NaN") } else if value.isInfinite { raw(value < 0 ? "-Infinity" : "Infinity") } else { raw(value.description) }
    }

    /// Writes up to `count` bytes in one go: `body` gets room for them and returns how many it
    /// wrote (each ByteBuffer call checks capacity and uniqueness: one per value, not per byte).
    private mutating func put(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in body(out) }
    }

    private mutating func open(_ bracket: UInt8) {
        let comma = separate()
        put(2) { out in
            if comma { out[0] = UInt8(ascii: ","); out[1] = bracket; return 2 }
            out[0] = bracket
            return 1
        }
        precondition(depth < 63, "JSONWriter: nested too deep")
        depth += 1
        written &= ~(1 << UInt64(depth))
    }

    private mutating func close(_ bracket: UInt8) {
        depth -= 1
        buffer.writeInteger(bracket)
    }

    /// Whether a comma goes before the next value of the open container (and marks it as holding one).
    private mutating func separate() -> Bool {
        let bit: UInt64 = 1 << UInt64(depth)
        defer { written |= bit }
        return written & bit != 0
    }

    /// After a key: its value takes no comma.
    private mutating func valueFollows() { written &= ~(1 << UInt64(depth)) }

    /// Decimal digits written in place (no String made on the way).
    private mutating func writeDecimal<T: BinaryInteger>(_ value: T, comma: Bool, quoted: Bool) {
        guard let magnitude = UInt64(exactly: value.magnitude) else {
            if comma { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeString(quoted ? "\"\(value)\"" : String(value))
            return
        }
        let negative = value < 0
        var digits = 1
        var rest = magnitude / 10
        while rest != 0 { digits += 1; rest /= 10 }
        put(24) { out in
            var at = 0
            if comma { out[at] = UInt8(ascii: ","); at += 1 }
            if quoted { out[at] = UInt8(ascii: "\""); at += 1 }
            if negative { out[at] = UInt8(ascii: "-"); at += 1 }
            var remaining = magnitude
            var index = at + digits
            repeat {
                index -= 1
                out[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining % 10)
                remaining /= 10
            } while remaining != 0
            at += digits
            if quoted { out[at] = UInt8(ascii: "\""); at += 1 }
            return at
        }
    }

    private mutating func writeString(_ value: String, comma: Bool) {
        // Names, types and ids rarely need escaping: then the bytes are copied in one go (checked
        // on the contiguous UTF-8, not through the generic UTF-8 view).
        var text = value
        let plain = text.withUTF8 { bytes in
            guard bytes.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) else { return false }
            put(bytes.count + 3) { out in
                var at = 0
                if comma { out[0] = UInt8(ascii: ","); at = 1 }
                out[at] = UInt8(ascii: "\"")
                UnsafeMutableRawBufferPointer(rebasing: out[(at + 1)...]).copyMemory(from: UnsafeRawBufferPointer(bytes))
                out[at + 1 + bytes.count] = UInt8(ascii: "\"")
                return at + 2 + bytes.count
            }
            return true
        }
        if plain { return }
        if comma { buffer.writeInteger(UInt8(ascii: ",")) }
        buffer.writeInteger(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20:
                let hex: StaticString = "0123456789abcdef"
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex.utf8Start[Int(byte >> 4)])
                buffer.writeInteger(hex.utf8Start[Int(byte & 0xF)])
            default: buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
