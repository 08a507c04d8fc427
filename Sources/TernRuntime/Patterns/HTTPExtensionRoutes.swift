import Foundation
import TernCore

/// Routes that a pattern (or a program embedding Tern) adds to the KServe HTTP API under a path
/// prefix of its own (the experiments API under `/v2/experiments`). They are plain values the
/// HTTP frontend serves; the handler runs off the event loop.
public struct HTTPExtensionRoutes: Sendable {
    /// The path prefix the routes own, e.g. `/v2/experiments`.
    public let prefix: String
    /// The API group the routes belong to (what `--http-restricted-api` names to guard them).
    public let group: String
    /// Further groups a request needs, by method and the path below the prefix (an experiment's
    /// promote swaps a model, so it needs `lifecycle` too).
    public let alsoRequire: @Sendable (_ method: String, _ path: Substring) -> [String]
    /// Answers one request.
    public let handle: @Sendable (HTTPExtensionRequest) async -> HTTPExtensionResponse

    /// Routes under `prefix` in API group `group`, answered by `handle`.
    public init(
        prefix: String, group: String, alsoRequire: @escaping @Sendable (_ method: String, _ path: Substring) -> [String] = { _, _ in [] },
        handle: @escaping @Sendable (HTTPExtensionRequest) async -> HTTPExtensionResponse
    ) {
        self.prefix = prefix
        self.group = group
        self.alsoRequire = alsoRequire
        self.handle = handle
    }

    /// Every group a request to these routes needs.
    public func groups(method: String, rest: Substring) -> [String] { [group] + alsoRequire(method, rest) }
}

/// A request to extension routes: the path below the prefix, split at '/', percent-decoded.
public struct HTTPExtensionRequest: Sendable {
    /// The HTTP method, e.g. `POST`.
    public let method: String
    /// The path below the prefix, split at '/' and percent-decoded.
    public let path: [String]
    /// The query parameters, percent-decoded.
    public let query: [String: String]
    /// The request body.
    public let body: Data

    /// A request as the frontend parsed it.
    public init(method: String, path: [String], query: [String: String], body: Data) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
    }
}

/// The answer of extension routes.
public struct HTTPExtensionResponse: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The Content-Type header.
    public var contentType: String
    /// The body.
    public var body: Data

    /// An answer with this status, type and body (200, JSON by default).
    public init(status: Int = 200, contentType: String = "application/json", body: Data) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// JSON of an encodable value (200).
    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> HTTPExtensionResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return HTTPExtensionResponse(status: status, body: try encoder.encode(value))
        } catch {
            return .error(.internalError("cannot encode the answer: \(error)"))
        }
    }

    /// `{"error": message}` with the status Tern gives the error everywhere else.
    public static func error(_ error: TernError) -> HTTPExtensionResponse {
        let body = (try? JSONSerialization.data(withJSONObject: ["error": error.message])) ?? Data()
        return HTTPExtensionResponse(status: error.code.httpStatusCode, body: body)
    }
}

