import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SwiftProtobuf
import TernClient
import TernCore
import TernRuntime

/// The KServe v2 REST API with Triton's extensions. Each handler decodes, calls the engine and
/// encodes; no logic lives here. Everything but model loading and inference of slow or busy
/// models is answered synchronously, on the event loop that read the request.
struct KServeHTTPAPI: HTTPResponder {
    let server: InferenceServer
    var extensions: [HTTPExtensionRoutes] = []
    /// Request headers whose names match are passed to the model as request parameters (lowercased
    /// names), as Triton's `--http-header-forward-pattern` does.
    var headerForwardPattern: NSRegularExpression? = nil
    /// The restricted API groups and their keys (`--http-restricted-api`).
    var access: APIAccessPolicy = .open
    /// The largest body taken (`--max-request-size`): no shape sent in a request may declare more.
    var maxRequestSize = Int.max

    init(server: InferenceServer, extensions: [HTTPExtensionRoutes] = [], access: APIAccessPolicy = .open) {
        self.server = server
        self.extensions = extensions
        self.access = access
    }

    enum Route {
        case serverMetadata, live, ready, allStats, repositoryIndex
        case model(String, Int64?, ModelAction)
        case load(String), unload(String)
        /// Tern's lifecycle extension: hot-swap with gates, rollback, status and history.
        case promote(String), rollback(String), lifecycleStatus(String?), history(String?)
        /// The shared-memory extensions: system regions, and CUDA ones (refused: no CUDA memory here).
        case sharedMemory(SharedMemoryAction, region: String?, cuda: Bool)
    }
    enum SharedMemoryAction { case status, register, unregister }
    enum ModelAction { case metadata, ready, config, stats, infer }

    func answer(_ request: HTTPRequestData) -> HTTPAnswer {
        if !extensions.isEmpty, let (routes, rest) = HTTPExtensionRoutes.match(extensions, path: request.path) {
            for group in routes.groups(method: request.method.rawValue, rest: rest) {
                if let refusal = access.refusal(group: group, header: { request.headers.first(name: $0) }) { return .now(.error(refusal)) }
            }
            let groups = routes.groups(method: request.method.rawValue, rest: rest)
            return HTTPExtensionRoutes.answer(routes, rest: rest, request: request, by: actor(request, groups: groups))
        }
        do throws(TernError) {
            let route: Route
            do throws(TernError) {
                route = try self.route(request, method: request.method)
            } catch where error.code == .notFound {
                // A path served for another method: 405 with the methods it takes.
                let allowed = [HTTPMethod.GET, .POST].filter { $0 != request.method && (try? self.route(request, method: $0)) != nil }
                if !allowed.isEmpty { return .now(.methodNotAllowed(allow: allowed.map(\.rawValue).joined(separator: ", "))) }
                throw error
            }
            let group = Self.group(of: route)
            if let refusal = access.refusal(group: group, header: { request.headers.first(name: $0) }) {
                return .now(.error(refusal))
            }
            let by = actor(request, groups: [group])
            switch route {
            case .model(let name, let version, .infer):
                let (inferenceRequest, binary) = try decodeInfer(request, name: name, version: version)
                // Answered on this thread when the engine runs it inline (see Answer.run).
                return .callback { [self] reply in
                    server.submit(inferenceRequest) { result in
                        do throws(TernError) {
                            reply(try encode(try result.get(), binary: binary))
                        } catch {
                            reply(.error(error))
                        }
                    }
                }
            case .load(let name):
                let body = try jsonBody(request)
                let parameters = try InferHTTPCodec.decodeParameters(body["parameters"], context: "load request")
                let config = parameters["config"]?.stringValue
                var files: [String: Data] = [:]
                for (key, value) in parameters where key.hasPrefix("file:") {
                    guard let text = value.stringValue, let data = Data(base64Encoded: text) else {
                        throw TernError.invalidArgument("load parameter '\(key)' must be base64-encoded file content")
                    }
                    files[key] = data
                }
                for key in parameters.keys where key != "config" && !key.hasPrefix("file:") {
                    throw TernError.invalidArgument("unexpected load parameter '\(key)'")
                }
                let content = files
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            try await server.load(model: name, configJSON: config, files: content)
                            return .empty(.ok)
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case .promote(let name):
                let body = try jsonBody(request)
                var version: Int64? = nil
                if let value = body["version"] {
                    guard let number = value.numberValue?.int, number > 0 else {
                        throw TernError.invalidArgument("promote: 'version' must be a positive integer")
                    }
                    version = number
                }
                let chosen = version
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            return try HTTPReply.encoded(try await server.promote(model: name, version: chosen))
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case .rollback(let name):
                return .later {
                    await LifecycleEvent.$requestedBy.withValue(by) {
                        do throws(TernError) {
                            return try HTTPReply.encoded(try await server.rollback(model: name))
                        } catch {
                            return .error(error)
                        }
                    }
                }
            case let route:
                let reply = LifecycleEvent.$requestedBy.withValue(by) { Result { () throws(TernError) in try answer(route, request) } }
                return .now(try reply.get())
            }
        } catch {
            return .now(.error(error))
        }
    }

    /// Who a control request is recorded as coming from: the client's address (and certificate
    /// name), and the name of the key that opened its restricted groups.
    private func actor(_ request: HTTPRequestData, groups: [String]) -> String {
        let keys = groups.compactMap { access.keyName(for: $0) }
        return keys.isEmpty ? request.peer : "\(request.peer), key \(keys.joined(separator: "+"))"
    }
}
