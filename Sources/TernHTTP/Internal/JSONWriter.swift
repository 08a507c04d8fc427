import NIOCore

/// Writes JSON straight into a ByteBuffer. Foundation's JSONSerialization costs tens of
/// microseconds per small document on Linux, more than the model itself for small models, so the
/// inference response path writes its JSON by hand.
struct JSONWriter {
    var buffer: ByteBuffer
    private var needsComma: [Bool] = [false]

    init(buffer: ByteBuffer) { self.buffer = buffer }

    mutating func beginObject() { separate(); buffer.writeInteger(UInt8(ascii: "{")); needsComma.append(false) }
    mutating func endObject() { needsComma.removeLast(); buffer.writeInteger(UInt8(ascii: "}")) }
    mutating func beginArray() { separate(); buffer.writeInteger(UInt8(ascii: "[")); needsComma.append(false) }
    mutating func endArray() { needsComma.removeLast(); buffer.writeInteger(UInt8(ascii: "]")) }

    /// An object key; the value written next belongs to it.
    mutating func key(_ key: String) {
        separate()
        writeString(key)
        buffer.writeInteger(UInt8(ascii: ":"))
        needsComma[needsComma.count - 1] = false
    }

    mutating func string(_ value: String) { separate(); writeString(value) }
    mutating func raw(_ text: String) { separate(); buffer.writeString(text) }
    mutating func bool(_ value: Bool) { raw(value ? "true" : "false") }
    mutating func integer<T: BinaryInteger>(_ value: T) { raw(String(value)) }

    /// Shortest text that reads back as the same value; NaN and infinities as Python's json writes them.
    mutating func number<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T) {
        if value.isNaN { raw("NaN") } else if value.isInfinite { raw(value < 0 ? "-Infinity" : "Infinity") } else { raw(value.description) }
    }

    private mutating func separate() {
        if needsComma[needsComma.count - 1] { buffer.writeInteger(UInt8(ascii: ",")) }
        needsComma[needsComma.count - 1] = true
    }

    private mutating func writeString(_ value: String) {
        buffer.writeInteger(UInt8(ascii: "\""))
        // Names, types and ids rarely need escaping: then the text is copied in one go (checked
        // on the contiguous UTF-8 bytes, not through the generic UTF-8 view).
        var text = value
        let plain = text.withUTF8 { bytes in
            bytes.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
        }
        if plain {
            buffer.writeString(text)
            buffer.writeInteger(UInt8(ascii: "\""))
            return
        }
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20:
                buffer.writeStaticString("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default: buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
