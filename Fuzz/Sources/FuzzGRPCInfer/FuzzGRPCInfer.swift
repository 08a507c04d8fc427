import FuzzDriver
import Foundation
import TernCore
@testable import TernClient
@testable import TernGRPC
import TernRuntime

/// gRPC ModelInfer decoding: protobuf bytes to a message, the message to engine tensors, and the
/// tensors' byte-size checks.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(UnsafeBufferPointer(start: start, count: count))
    guard let message = try? Inference_ModelInferRequest(serializedBytes: data) else { return 0 }
    if let request = try? GRPCConversions.request(message, sharedMemory: SharedMemoryRegistry(allowsRegistration: false)) {
        for tensor in request.inputs { try? tensor.validateByteSize() }
    }
    return 0
}

@main enum Main {
    static func main() { runFuzzer(fuzz) }
}
