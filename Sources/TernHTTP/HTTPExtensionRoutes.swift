import Foundation
import NIOCore
import NIOHTTP1
import TernCore
import TernRuntime

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
