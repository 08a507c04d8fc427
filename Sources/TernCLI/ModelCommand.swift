import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import TernClient
import TernRuntime

/// `tern model`: a running server's model lifecycle — load, unload, hot-swap (promote) with
/// validation gates, rollback, status and the history kept in SQLite.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Load, unload, promote and roll back models on a running server.",
        subcommands: [Load.self, Unload.self, Promote.self, Rollback.self, Status.self, History.self])

    struct Server: ParsableArguments {
        @Option(help: "The server's host.") var host = "127.0.0.1"
        @Option(name: .customLong("http-port"), help: "The server's HTTP port.") var httpPort = 8000
        @Flag(help: "Print the server's JSON answer.") var json = false

        /// Sends one request; a non-2xx answer becomes the server's error message and status 1.
        func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> Data {
            let reply = try await KServeHTTPClient(host: host, port: httpPort).send(
                method, path, headers: body == nil ? [] : [("Content-Type", "application/json")], body: body.map { ByteBuffer(string: $0) })
            guard (200..<300).contains(reply.status) else { throw CommandFailure("\(reply.errorMessage) (HTTP \(reply.status))") }
            return Data(reply.body.readableBytesView)
        }

        func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
            try JSONDecoder().decode(type, from: data)
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load (or reload, with gates and a hot-swap) a model.")
        @OptionGroup var server: Server
        @Argument var model: String
        @Option(help: "A JSON config that replaces config.pbtxt.") var config: String?
        func run() async throws {
            var body = "{}"
            if let config {
                let escaped = String(decoding: try JSONSerialization.data(withJSONObject: [config], options: [.fragmentsAllowed]), as: UTF8.self)
                body = #"{"parameters":{"config":\#(escaped.dropFirst().dropLast())}}"#
            }
            _ = try await server.call(.POST, "/v2/repository/models/\(model)/load", body: body)
            print("loaded \(model)")
        }
    }

    struct Unload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unload a model (its memory is given back).")
        @OptionGroup var server: Server
        @Argument var model: String
        func run() async throws {
            _ = try await server.call(.POST, "/v2/repository/models/\(model)/unload", body: "{}")
            print("unloaded \(model)")
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hot-swap to a version (default: the version policy's choice) once it passes the model's gates.")
        @OptionGroup var server: Server
        @Argument var model: String
        @Option(help: "The version to serve (pinned until the next promote).") var version: Int64?
        func run() async throws {
            let body = version.map { #"{"version":\#($0)}"# } ?? "{}"
            let data = try await server.call(.POST, "/v2/repository/models/\(model)/promote", body: body)
            try printReport(data, server: server)
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Go back to the versions served before the last swap.")
        @OptionGroup var server: Server
        @Argument var model: String
        func run() async throws {
            let data = try await server.call(.POST, "/v2/repository/models/\(model)/rollback", body: "{}")
            try printReport(data, server: server)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Phase, serving, pinned, previous and rejected versions, memory and the last swap; of every model without MODEL.")
        @OptionGroup var server: Server
        @Argument(help: "The model (default: a table of every model).") var model: String?
        func run() async throws {
            guard let model else {
                let data = try await server.call(.GET, "/v2/repository/status")
                if server.json { return print(String(decoding: data, as: UTF8.self)) }
                let all = try server.decode([ModelLifecycleStatus].self, data)
                let width = max(5, all.map(\.model.count).max() ?? 0)
                func pad(_ text: String, _ count: Int) -> String { text.padding(toLength: max(count, text.count), withPad: " ", startingAt: 0) }
                print(pad("MODEL", width) + "  " + pad("STATE", 11) + "  " + pad("PHASE", 11) + "  " + pad("SERVING", 9) + "  PINNED")
                for status in all {
                    print(pad(status.model, width) + "  " + pad(status.state, 11) + "  " + pad(status.phase, 11) + "  "
                        + pad(versions(status.servingVersions), 9) + "  " + (status.pinnedVersions.map(versions) ?? "-"))
                }
                return
            }
            let data = try await server.call(.GET, "/v2/repository/models/\(model)/status")
            if server.json { return print(String(decoding: data, as: UTF8.self)) }
            let status = try server.decode(ModelLifecycleStatus.self, data)
            print("model     \(status.model) (\(status.state), \(status.phase))")
            print("serving   \(versions(status.servingVersions))" + (status.pinnedVersions != nil ? " (pinned)" : ""))
            print("previous  \(versions(status.previousVersions))" + (status.previousWarm ? " (warm: instant rollback)" : ""))
            if !status.rejectedVersions.isEmpty { print("rejected  \(versions(status.rejectedVersions)) (by the gates; not retried from the same files)") }
            if let bytes = status.memoryBytes { print("memory    \(bytes >> 20) MB") }
            if let swap = status.lastSwap { print("last swap " + summary(swap)) }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What changed, when, and the gate results (newest last).")
        @OptionGroup var server: Server
        @Argument var model: String?
        @Option(help: "How many events.") var limit = 50
        func run() async throws {
            let path = model.map { "/v2/repository/models/\($0)/history?limit=\(limit)" } ?? "/v2/repository/history?limit=\(limit)"
            let data = try await server.call(.GET, path)
            if server.json { return print(String(decoding: data, as: UTF8.self)) }
            for event in try server.decode([LifecycleEvent].self, data) {
                var line = "\(event.time)  \(event.model)  \(event.action)"
                if !event.fromVersions.isEmpty || !event.toVersions.isEmpty {
                    line += "  \(versions(event.fromVersions)) → \(versions(event.toVersions))"
                }
                if let ms = event.durationMs { line += String(format: "  %.0f ms", ms) }
                for gate in event.gates { line += "\n    gate \(gate.name): \(gate.passed ? "pass" : "FAIL") — \(gate.detail)" }
                if !event.detail.isEmpty, event.gates.isEmpty { line += "\n    \(event.detail)" }
                if !event.by.isEmpty { line += "\n    by \(event.by)" }
                print(line)
            }
        }
    }
}

private func versions(_ list: [Int64]) -> String {
    list.isEmpty ? "-" : list.map(String.init).joined(separator: ",")
}

private func summary(_ report: SwapReport) -> String {
    "\(versions(report.fromVersions)) → \(versions(report.toVersions)) \(report.accepted ? "accepted" : "REJECTED")"
        + String(format: " in %.0f ms", report.durationMs)
}

private func printReport(_ data: Data, server: ModelCommand.Server) throws {
    if server.json { return print(String(decoding: data, as: UTF8.self)) }
    let report = try server.decode(SwapReport.self, data)
    print(report.model + " " + summary(report))
    for gate in report.gates { print("  gate \(gate.name): \(gate.passed ? "pass" : "FAIL") — \(gate.detail)") }
}
