import FuzzDriver
import TernDevice

/// One tegrastats line (the Jetson telemetry the device monitor reads from a subprocess).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    _ = try? TegrastatsParser.parse(String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self))
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
