import Foundation
import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime

/// Routes that a program embedding Tern adds to the KServe HTTP API under a path prefix of its own
/// (the experiments API under `/v2/experiments`). The handler runs off the event loop.
public struct HTTPExtensionRoutes: Sendable {
    public let prefix: String
    /// The API group the routes belong to (what `--http-restricted-api` names to guard them).
    public let group: String
    /// Further groups a request needs, by method and the path below the prefix (an experiment's
    /// promote swaps a model, so it needs `lifecycle` too).
    public let alsoRequire: @Sendable (_ method: String, _ path: Substring) -> [String]
    public let handle: @Sendable (HTTPExtensionRequest) async -> HTTPExtensionResponse

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
    func groups(method: String, rest: Substring) -> [String] { [group] + alsoRequire(method, rest) }
}

/// A request to extension routes: the path below the prefix, split at '/', percent-decoded.
public struct HTTPExtensionRequest: Sendable {
    public let method: String
    public let path: [String]
    public let query: [String: String]
    public let body: Data
}

public struct HTTPExtensionResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: Data

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
        let reply = HTTPReply.error(error)
        return HTTPExtensionResponse(status: Int(reply.status.code), body: Data(reply.body.readableBytesView))
    }
}

extension HTTPExtensionRoutes {
    /// The routes that own `path`, and the path below their prefix.
    static func match(_ routes: [HTTPExtensionRoutes], path: String) -> (HTTPExtensionRoutes, Substring)? {
        for route in routes where path.hasPrefix(route.prefix) {
            let rest = path.dropFirst(route.prefix.count)
            if rest.isEmpty || rest.first == "/" || rest.first == "?" { return (route, rest) }
        }
        return nil
    }

    static func answer(_ route: HTTPExtensionRoutes, rest: Substring, request: HTTPRequestData, by: String) -> HTTPAnswer {
        let parts = rest.split(separator: "?", maxSplits: 1)
        let pathPart = rest.first == "?" ? "" : (parts.first ?? "")
        let queryPart = rest.first == "?" ? (parts.first ?? "") : (parts.count > 1 ? parts[1] : "")
        let path = pathPart.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        var query: [String: String] = [:]
        for pair in queryPart.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            query[key] = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(kv[1])) : ""
        }
        let extensionRequest = HTTPExtensionRequest(
            method: request.method.rawValue, path: path, query: query, body: Data(request.body.readableBytesView))
        return .later {
            let response = await LifecycleEvent.$requestedBy.withValue(by) { await route.handle(extensionRequest) }
            return HTTPReply(
                status: HTTPResponseStatus(statusCode: response.status), headers: [("Content-Type", response.contentType)],
                body: ByteBuffer(bytes: response.body))
        }
    }
}
