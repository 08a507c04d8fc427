import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import TernClient
import TernExperiments

/// `tern ab`: A/B experiments, shadows and canaries on a running server.
struct ABCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ab", abstract: "Create, watch, stop and promote A/B experiments and canaries on a running server.",
        subcommands: [Create.self, List.self, Status.self, Stop.self, Promote.self, Report.self, Feedback.self, Delete.self, StoreBench.self])

    typealias Server = ModelCommand.Server

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start an experiment defined in a YAML or JSON file.")
        @OptionGroup var server: Server
        @Argument(help: "The experiment file (see docs/reference.md: A/B experiments, shadows and canaries).") var file: String
        func run() async throws {
            let text = try String(contentsOfFile: file, encoding: .utf8)
            let data = try await server.call(.POST, "/v2/experiments", body: text)
            try printStatus(data, json: server.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The server's experiments.")
        @OptionGroup var server: Server
        func run() async throws {
            let data = try await server.call(.GET, "/v2/experiments")
            if server.json { return print(String(decoding: data, as: UTF8.self)) }
            let all = try server.decode([ExperimentStatus].self, data)
            if all.isEmpty { print("no experiments") }
            for status in all { print(ABCommand.describe(status)) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "An experiment's variants, weights and state.")
        @OptionGroup var server: Server
        @Argument var name: String
        func run() async throws {
            let data = try await server.call(.GET, "/v2/experiments/\(name)")
            try printStatus(data, json: server.json)
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop splitting: all traffic to the control.")
        @OptionGroup var server: Server
        @Argument var name: String
        @Option(help: "Why (kept in the experiment's events).") var reason = "stopped from the command line"
        func run() async throws {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["reason": reason]), as: UTF8.self)
            let data = try await server.call(.POST, "/v2/experiments/\(name)/stop", body: body)
            try printStatus(data, json: server.json)
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a variant the answer to every request (versions of one model: hot-swap the model to it).")
        @OptionGroup var server: Server
        @Argument var name: String
        @Option(help: "The winner (default: the best by accuracy, else by error rate).") var variant: String?
        func run() async throws {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: variant.map { ["variant": $0] } ?? [:]), as: UTF8.self)
            let data = try await server.call(.POST, "/v2/experiments/\(name)/promote", body: body)
            try printStatus(data, json: server.json)
        }
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The experiment's statistics (text, --json, or an HTML page).")
        @OptionGroup var server: Server
        @Argument var name: String
        @Option(help: "Write a self-contained HTML report (tables and SVG charts) to this file.") var html: String?
        func run() async throws {
            if let html {
                let page = try await server.call(.GET, "/v2/experiments/\(name)/report?format=html")
                let url = URL(fileURLWithPath: html)
                try page.write(to: url, options: .atomic)
                print("wrote \(url.path)")
                return
            }
            let data = try await server.call(.GET, "/v2/experiments/\(name)/report")
            if server.json { return print(String(decoding: data, as: UTF8.self)) }
            print(ReportText.render(try server.decode(ExperimentReport.self, data)))
        }
    }

    struct Feedback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attach ground-truth labels to request ids (one pair, or a CSV file of id,label lines).")
        @OptionGroup var server: Server
        @Option(help: "The request id.") var id: String?
        @Option(help: "Its true label.") var label: String?
        @Option(help: "A CSV file of id,label lines.") var file: String?
        func run() async throws {
            var labels: [[String: String]] = []
            if let id, let label { labels.append(["id": id, "label": label]) }
            if let file {
                for line in try String(contentsOfFile: file, encoding: .utf8).split(whereSeparator: \.isNewline) {
                    let fields = line.split(separator: ",", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    guard fields.count == 2, fields[0] != "id" else { continue }
                    labels.append(["id": fields[0], "label": fields[1]])
                }
            }
            guard !labels.isEmpty else { throw ValidationError("give --id and --label, or --file") }
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["labels": labels]), as: UTF8.self)
            let data = try await server.call(.POST, "/v2/experiments/feedback", body: body)
            if server.json { return print(String(decoding: data, as: UTF8.self)) }
            let answer = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
            print("\(answer["received"] ?? 0) labels received, \(answer["matched"] ?? 0) for requests an experiment routed")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an experiment (its records stay in the database).")
        @OptionGroup var server: Server
        @Argument var name: String
        func run() async throws {
            _ = try await server.call(.DELETE, "/v2/experiments/\(name)")
            print("deleted \(name)")
        }
    }

    /// What recording costs per request, without a server: records taken by an
    /// `ExperimentRecorder` on this thread (the request path's share) and written by
    /// `ExperimentStore.insert` in the writer's batches (the writer thread's share), into a fresh
    /// SQLite file.
    struct StoreBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "store-bench", abstract: "Measure the metrics store's cost per record (request path and writer) and per feedback label, in a temporary database.")
        @Option(help: "Records to write.") var records = 400_000
        @Option(help: "Records per transaction (the writer's flush).") var batch = 1600
        @Flag(name: .customLong("random-ids"), help: "Give every record a client-style random id instead of a generated one.") var randomIDs = false

        func run() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-store-bench-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let store = try ExperimentStore(path: directory.appendingPathComponent("ab.sqlite").path)
            let all = (0..<records).map { i in
                var record = ExperimentRecord(
                    time: Date().timeIntervalSince1970, experiment: "bench_ab", variant: i % 2 == 0 ? "a" : "b",
                    requestID: randomIDs ? UUID().uuidString : ExperimentRecorder.generatedRequestID(), latencyUs: Int64(100 + i % 50),
                    confidence: 0.9)
                record.predictedInteger = Int64(i % 10)
                return record
            }
            // The request path's share: queueing records (the writer is kept out of the way).
            let recorder = ExperimentRecorder(store: store, capacity: (records + 1) * ExperimentRecorder.shardCount, flushInterval: .seconds(3600), logger: .init(label: "bench"))
            let clock = ContinuousClock()
            let queued = clock.measure { for record in all { recorder.record(record) } }
            recorder.shutdown()
            let written = try store.requestCount()
            // The writer's share: batches into a fresh table.
            let store2 = try ExperimentStore(path: directory.appendingPathComponent("ab2.sqlite").path)
            let writing = try clock.measure {
                var start = 0
                while start < all.count {
                    try store2.insert(Array(all[start..<min(start + batch, all.count)]))
                    start += batch
                }
            }
            func perRecord(_ d: Duration) -> Double { Double(d.components.seconds) * 1e6 / Double(records) + Double(d.components.attoseconds) / 1e12 / Double(records) }
            print(String(format: "records %d (%@ ids), batch %d", records, randomIDs ? "random" : "generated", batch))
            print(String(format: "queue (request path): %.3f µs/record; written at shutdown: %d", perRecord(queued), written))
            print(String(format: "insert (writer):      %.3f µs/record", perRecord(writing)))
            // Feedback: labels for ids spread over everything written (sealed runs and the tail).
            let sample = stride(from: 0, to: all.count, by: max(all.count / 1000, 1)).map { (requestID: all[$0].requestID, label: "1") }
            var matched = 0
            let lookup = try clock.measure { matched = try store2.addFeedback(sample) }
            print(String(format: "feedback:             %.1f µs/label (%d labels, %d matched)",
                         Double(lookup.components.attoseconds) / 1e12 / Double(sample.count) + Double(lookup.components.seconds) * 1e6 / Double(sample.count),
                         sample.count, matched))
        }
    }

    static func describe(_ status: ExperimentStatus) -> String {
        var text = "\(status.name): \(status.status.rawValue)"
        if let winner = status.winner { text += " (winner \(winner))" }
        if let reason = status.reason { text += " — \(reason)" }
        for variant in status.variants {
            let target = variant.model + (variant.version.map { " v\($0)" } ?? "")
            text += "\n  \(variant.name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(target.padding(toLength: 24, withPad: " ", startingAt: 0)) "
            text += variant.shadow ? "shadow" : "weight \(String(format: "%g", variant.weight))"
        }
        return text
    }
}

/// Prints the server's answer (an experiment's status) as JSON or as text.
private func printStatus(_ data: Data, json: Bool) throws {
    if json { return print(String(decoding: data, as: UTF8.self)) }
    print(ABCommand.describe(try JSONDecoder().decode(ExperimentStatus.self, from: data)))
}

/// The report as text for a terminal.
enum ReportText {
    static func render(_ report: ExperimentReport) -> String {
        func f(_ value: Double?, _ format: String) -> String { value.map { String(format: format, $0) } ?? "–" }
        var lines = ["experiment \(report.experiment): \(report.status.rawValue)" + (report.reason.map { " — \($0)" } ?? "")]
        lines.append("variant          requests  errors   mean ms   p50 ms   p95 ms   p99 ms  confidence  labelled  accuracy (95% CI)")
        for v in report.variants {
            let accuracy = v.accuracy.map { a in
                String(format: "%.1f%%", a * 100) + (v.accuracyCI95.map { String(format: " (%.1f–%.1f)", $0[0] * 100, $0[1] * 100) } ?? "")
            } ?? "–"
            let name = (v.name + (v.shadow ? "*" : "")).padding(toLength: 15, withPad: " ", startingAt: 0)
            lines.append(
                "\(name) \(String(format: "%9d", v.requests)) \(f(v.errorRate.map { $0 * 100 }, "%6.1f%%")) \(f(v.latencyMs?.mean, "%9.2f")) "
                    + "\(f(v.latencyMs?.p50, "%8.2f")) \(f(v.latencyMs?.p95, "%8.2f")) \(f(v.latencyMs?.p99, "%8.2f")) "
                    + "\(f(v.meanConfidence, "%11.3f")) \(String(format: "%9d", v.labelled))  \(accuracy)")
        }
        for c in report.comparisons {
            var parts = ["\(c.variant) vs \(c.control):"]
            if let l = c.latency { parts.append(String(format: "latency Mann-Whitney p=%.3g P(slower)=%.3f", l.p, l.probabilityOfSuperiority)) }
            if let e = c.errorRate { parts.append(String(format: "error Δ=%+.2f pt p=%.3g", e.difference * 100, e.p)) }
            if let a = c.accuracy { parts.append(String(format: "accuracy Δ=%+.2f pt p=%.3g h=%.2f", a.difference * 100, a.p, a.cohensH)) }
            lines.append(parts.joined(separator: "  "))
        }
        if let srm = report.sampleRatio {
            lines.append(String(format: "sample ratio: chi2=%.2f p=%.3g", srm.chiSquare, srm.p) + (srm.mismatch ? "  MISMATCH" : ""))
        }
        lines.append("guardrails: \(report.verdict.outcome.rawValue)" + (report.verdict.reasons.isEmpty ? "" : " — " + report.verdict.reasons.joined(separator: "; ")))
        if report.variants.contains(where: \.shadow) { lines.append("* shadow: sees a copy of the traffic, never answers") }
        return lines.joined(separator: "\n")
    }
}
