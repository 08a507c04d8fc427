import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SwiftProtobuf
import TernClient
import TernCore
import TernRuntime

/// Routing: which route a request's method and path name, and the API group each route belongs to.
extension KServeHTTPAPI {
    /// The API group a route belongs to (Triton's grouping; Tern's lifecycle extension apart).
    static func group(of route: Route) -> String {
        switch route {
        case .live, .ready: "health"
        case .serverMetadata: "metadata"
        case .allStats: "statistics"
        case .repositoryIndex, .load, .unload: "model-repository"
        case .promote, .rollback, .lifecycleStatus, .history: "lifecycle"
        case .sharedMemory: "shared-memory"
        case .model(_, _, let action):
            switch action {
            case .metadata: "metadata"
            case .ready: "health"
            case .config: "model-config"
            case .stats: "statistics"
            case .infer: "inference"
            }
        }
    }

    func route(_ request: HTTPRequestData, method: HTTPMethod) throws(TernError) -> Route {
        let path = request.path.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(request.path[..<$0]) } ?? request.path
        let parts = path.utf8.split(separator: UInt8(ascii: "/")).map { component in
            // Foundation's percent decoding is slow; most paths have nothing to decode.
            let text = String(Substring(component))
            return component.contains(UInt8(ascii: "%")) ? (text.removingPercentEncoding ?? text) : text
        }
        let get = method == .GET, post = method == .POST
        func fail() -> TernError { TernError(.notFound, "no route for \(method.rawValue) \(path)") }
        guard parts.first == "v2" else { throw fail() }
        switch (parts.count, get, post) {
        case (1, true, _): return .serverMetadata
        case (3, true, _) where parts[1] == "health" && parts[2] == "live": return .live
        case (3, true, _) where parts[1] == "health" && parts[2] == "ready": return .ready
        case (3, true, _) where parts[1] == "models" && parts[2] == "stats": return .allStats
        case (3, _, true) where parts[1] == "repository" && parts[2] == "index": return .repositoryIndex
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "load": return .load(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "unload": return .unload(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "promote": return .promote(parts[3])
        case (5, _, true) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "rollback": return .rollback(parts[3])
        case (5, true, _) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "status": return .lifecycleStatus(parts[3])
        case (5, true, _) where parts[1] == "repository" && parts[2] == "models" && parts[4] == "history": return .history(parts[3])
        case (3, true, _) where parts[1] == "repository" && parts[2] == "history": return .history(nil)
        case (3, true, _) where parts[1] == "repository" && parts[2] == "status": return .lifecycleStatus(nil)
        default: break
        }
        if parts.count >= 3, parts[1] == "systemsharedmemory" || parts[1] == "cudasharedmemory" {
            let cuda = parts[1] == "cudasharedmemory"
            switch (parts.count, parts[parts.count - 1], get, post) {
            case (3, "status", true, _): return .sharedMemory(.status, region: nil, cuda: cuda)
            case (3, "unregister", _, true): return .sharedMemory(.unregister, region: nil, cuda: cuda)
            case (5, "status", true, _) where parts[2] == "region": return .sharedMemory(.status, region: parts[3], cuda: cuda)
            case (5, "register", _, true) where parts[2] == "region": return .sharedMemory(.register, region: parts[3], cuda: cuda)
            case (5, "unregister", _, true) where parts[2] == "region": return .sharedMemory(.unregister, region: parts[3], cuda: cuda)
            default: throw fail()
            }
        }
        guard parts.count >= 3, parts[1] == "models" else { throw fail() }
        let name = parts[2]
        var rest = parts[3...]
        var version: Int64? = nil
        if rest.first == "versions" {
            guard rest.count >= 2 else { throw fail() }
            let text = rest[rest.startIndex + 1]
            guard let number = Int64(text), number > 0 else {
                throw .invalidArgument("model version must be a positive integer, not '\(text)'")
            }
            version = number
            rest = rest.dropFirst(2)
        }
        let action: ModelAction
        switch (rest.first, rest.count, get, post) {
        case (nil, 0, true, _): action = .metadata
        case ("ready", 1, true, _): action = .ready
        case ("config", 1, true, _): action = .config
        case ("stats", 1, true, _): action = .stats
        case ("infer", 1, _, true): action = .infer
        default: throw fail()
        }
        return .model(name, version, action)
    }
}
