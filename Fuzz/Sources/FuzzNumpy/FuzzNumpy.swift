import FuzzDriver
import Foundation
import TernCore

/// `.npy` decoding (the validation sets of hot-swap gates, `tern infer` inputs).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    _ = try? NumpyFile.decode(Data(UnsafeBufferPointer(start: start, count: count)), source: "fuzz.npy", name: "x")
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
