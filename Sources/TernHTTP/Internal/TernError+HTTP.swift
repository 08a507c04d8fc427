import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import TernClient
import TernCore

extension TernError.Code {
    /// Triton's HTTP status for each kind of failure (`httpStatusCode`).
    var httpStatus: HTTPResponseStatus { HTTPResponseStatus(statusCode: httpStatusCode) }
}

extension HTTPReply {
    /// `{"error": "<message>"}` with the status the error's code maps to.
    static func error(_ error: TernError) -> HTTPReply {
        var json = JSONWriter(buffer: ByteBuffer())
        json.beginObject()
        json.key("error")
        json.string(error.message)
        json.endObject()
        return HTTPReply(status: error.code.httpStatus, headers: [("Content-Type", "application/json")], body: json.buffer)
    }

    static func json(_ object: Any, status: HTTPResponseStatus = .ok) throws(TernError) -> HTTPReply {
        HTTPReply(status: status, headers: [("Content-Type", "application/json")], body: ByteBuffer(data: try JSONTensorCodec.jsonBytes(object)))
    }

    static func empty(_ status: HTTPResponseStatus) -> HTTPReply { HTTPReply(status: status) }

    /// 405 for a path that exists but not for the request's method, with the methods it takes.
    static func methodNotAllowed(allow: String) -> HTTPReply {
        var reply = error(TernError(.invalidArgument, "method not allowed here; this path takes \(allow)"))
        reply.status = .methodNotAllowed
        reply.headers.append(("Allow", allow))
        return reply
    }

    /// A Codable value as JSON (Tern's own extensions: lifecycle reports, status, history).
    static func encoded<T: Encodable>(_ value: T) throws(TernError) -> HTTPReply {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return HTTPReply(status: .ok, headers: [("Content-Type", "application/json")], body: ByteBuffer(data: try encoder.encode(value)))
        } catch {
            throw .internalError("cannot encode the answer: \(error)", cause: error)
        }
    }
}
