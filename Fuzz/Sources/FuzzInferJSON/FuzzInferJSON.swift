import FuzzDriver
import NIOCore
import TernCore
@testable import TernClient
@testable import TernHTTP
import TernRuntime

/// The KServe v2 REST infer decoder: JSON alone, or a JSON header followed by binary tensor data
/// (the first two bytes pick the header length), then the tensors' byte-size checks.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: start, count: count)
    guard bytes.count >= 2 else { return 0 }
    let split = Int(bytes[0]) | Int(bytes[1]) << 8
    let body = ByteBuffer(bytes: bytes[2...])
    let headerLength: Int? = split == 0xFFFF ? nil : split % (body.readableBytes + 2) - 1
    do {
        let (request, _) = try InferHTTPCodec.decodeRequest(
            body: body, headerLength: headerLength, model: "m", version: nil, sharedMemory: SharedMemoryRegistry(allowsRegistration: false))
        for tensor in request.inputs { try? tensor.validateByteSize() }
    } catch {}
    _ = try? JSONParser.parse(UnsafeRawBufferPointer(bytes))
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
