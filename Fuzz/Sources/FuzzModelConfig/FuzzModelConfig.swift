import FuzzDriver
import TernCore

/// config.pbtxt parsing (text format, and JSON as a load request sends it) and every check a
/// config goes through before anything is allocated for it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    for parsed in [try? ModelConfig.parse(text: text, file: "fuzz/config.pbtxt"), try? ModelConfig.parse(json: text)] {
        guard let config = parsed else { continue }
        try? config.validate(file: "fuzz/config.pbtxt")
        try? config.validateLimits(file: "fuzz/config.pbtxt")
        try? config.validatePaths(file: "fuzz/config.pbtxt")
    }
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
