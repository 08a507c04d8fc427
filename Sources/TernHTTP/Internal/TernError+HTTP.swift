import Foundation
import HTTPTypes
import Hummingbird
import TernCore

extension TernError.Code {
    /// Triton's HTTP status for each kind of failure.
    var httpStatus: HTTPResponse.Status {
        switch self {
        case .notFound: .notFound
        case .invalidArgument, .failedPrecondition, .alreadyExists: .badRequest
        case .unavailable: .serviceUnavailable
        case .unimplemented: .notImplemented
        default: .internalServerError
        }
    }
}

extension HTTPField.Name {
    static let inferenceHeaderContentLength = HTTPField.Name("Inference-Header-Content-Length")!
}

extension Response {
    /// `{"error": "<message>"}` with the status the error's code maps to.
    static func error(_ error: TernError) -> Response {
        let body = (try? InferHTTPCodec.jsonBytes(["error": error.message])) ?? Data("{\"error\":\"internal error\"}".utf8)
        return Response(
            status: error.code.httpStatus, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) throws(TernError) -> Response {
        let bytes = try InferHTTPCodec.jsonBytes(object)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func empty(_ status: HTTPResponse.Status) -> Response {
        Response(status: status, body: .init())
    }
}
