import Foundation
import TernTraining

/// A run as text and as a self-contained HTML page (no scripts, inline SVG): what `tern fl status`
/// and `tern fl report` print.
public enum FLReport {
    /// One line per round with a bar of the fit answers that counted, then the run's state.
    public static func text(info: FLRunInfo?, rounds: [FLRoundSummary], width: Int = 20) -> String {
        var lines: [String] = []
        let planned = info?.rounds ?? rounds.count
        let restarts = info.map { $0.restarts == 1 ? ", 1 restart" : ($0.restarts > 1 ? ", \($0.restarts) restarts" : "") } ?? ""
        lines.append("run \(info?.run ?? "?"): \(info?.status ?? "unknown"), \(rounds.count) of \(planned) rounds\(restarts)")
        lines.append(bar(done: rounds.count, total: max(planned, 1), width: width) + " \(planned > 0 ? rounds.count * 100 / planned : 0)%")
        for summary in rounds {
            let r = summary.record
            var parts = ["round \(String(format: "%3d", r.round))", bar(done: r.fitResults, total: max(r.fitClients.count, 1), width: width),
                         "\(r.fitResults)/\(r.fitClients.count) fit"]
            let failures = Dictionary(grouping: r.fitFailures.values, by: { $0 }).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
            if !failures.isEmpty { parts.append("(" + failures.joined(separator: ", ") + ")") }
            if !r.skipped.isEmpty { parts.append("\(r.skipped.count) skipped") }
            if let loss = r.loss { parts.append(String(format: "loss %.4f", loss)) }
            for (key, value) in r.metrics.sorted(by: { $0.key < $1.key }) { parts.append(String(format: "%@ %.4f", key, value)) }
            if let epsilon = r.epsilon { parts.append(String(format: "ε %.3f", epsilon)) }
            parts.append(String(format: "%.2f s", summary.seconds))
            parts.append("\(kilobytes(summary.bytesSent)) sent, \(kilobytes(summary.bytesReceived)) received")
            if !r.aggregated { parts.append("not aggregated: \(r.aggregationNote ?? "")") }
            lines.append(parts.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }

    static func bar(done: Int, total: Int, width: Int) -> String {
        let filled = min(width, max(0, done * width / max(total, 1)))
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
    }

    static func kilobytes(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? String(format: "%.1f MB", Double(bytes) / 1_048_576) : String(format: "%.1f KB", Double(bytes) / 1024)
    }

    /// The page: the run's state, a chart of the loss and one of each evaluation metric per round,
    /// and a table of each client's part in each round.
    public static func html(info: FLRunInfo?, rounds: [FLRoundSummary]) -> String {
        let name = escape(info?.run ?? "run")
        var body = "<h1>Federated run \(name)</h1>\n"
        body += "<p id=\"state\">\(escape(info?.status ?? "unknown")): \(rounds.count) of \(info?.rounds ?? rounds.count) rounds"
        if let restarts = info?.restarts, restarts > 0 { body += ", resumed \(restarts) time\(restarts == 1 ? "" : "s")" }
        body += "</p>\n"
        let losses = rounds.map { ($0.record.round, $0.record.loss) }
        body += chart(id: "loss", title: "Loss (weighted by examples)", points: losses)
        let metricNames = Set(rounds.flatMap { $0.record.metrics.keys }).sorted()
        for metric in metricNames {
            body += chart(id: "metric-\(escape(metric))", title: escape(metric), points: rounds.map { ($0.record.round, $0.record.metrics[metric]) })
        }
        body += participation(rounds)
        body += roundTable(rounds)
        return """
            <!DOCTYPE html>
            <html><head><meta charset="utf-8"><title>Tern FL: \(name)</title>
            <style>
            body{font-family:sans-serif;margin:24px;color:#222} table{border-collapse:collapse;margin:12px 0}
            td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:center} .ok{background:#cfc}
            .skipped{background:#eee} .failed{background:#fcc} .chart{margin:12px 0} h2{font-size:16px}
            </style></head><body>
            \(body)</body></html>

            """
    }

    static func chart(id: String, title: String, points: [(Int, Double?)]) -> String {
        let known = points.compactMap { p in p.1.map { (p.0, $0) } }
        var svg = "<div class=\"chart\" id=\"\(id)\"><h2>\(title)</h2>"
        guard let low = known.map(\.1).min(), let high = known.map(\.1).max() else { return svg + "<p>no values</p></div>\n" }
        let (w, h, pad) = (520.0, 180.0, 36.0)
        let span = high - low > 0 ? high - low : 1
        let last = Double(max(points.map(\.0).max() ?? 1, 2))
        func x(_ round: Int) -> Double { pad + (Double(round) - 1) / (last - 1) * (w - 2 * pad) }
        func y(_ value: Double) -> Double { h - pad - (value - low) / span * (h - 2 * pad) }
        let path = known.map { String(format: "%.1f,%.1f", x($0.0), y($0.1)) }.joined(separator: " ")
        svg += "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\">"
        svg += "<rect x=\"0\" y=\"0\" width=\"\(Int(w))\" height=\"\(Int(h))\" fill=\"#fafafa\" stroke=\"#ddd\"/>"
        svg += "<polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"\(path)\"/>"
        for (round, value) in known {
            svg += String(format: "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#2563eb\"><title>round %d: %.4f</title></circle>",
                          x(round), y(value), round, value)
        }
        svg += String(format: "<text x=\"4\" y=\"%.0f\" font-size=\"11\">%.3f</text><text x=\"4\" y=\"%.0f\" font-size=\"11\">%.3f</text>", pad, high, h - pad, low)
        svg += "<text x=\"\(Int(w / 2))\" y=\"\(Int(h - 8))\" font-size=\"11\">round</text></svg></div>\n"
        return svg
    }

    static func participation(_ rounds: [FLRoundSummary]) -> String {
        var outcomes: [String: [Int: String]] = [:]
        for summary in rounds {
            for (client, stage, outcome) in FLStore.participants(summary.record) where stage == "fit" {
                outcomes[client, default: [:]][summary.record.round] = outcome
            }
        }
        var html = "<h2>Participation (fit)</h2><table id=\"participation\"><tr><th>client</th>"
        for summary in rounds { html += "<th>\(summary.record.round)</th>" }
        html += "</tr>"
        for client in outcomes.keys.sorted() {
            html += "<tr><td>\(escape(client))</td>"
            for summary in rounds {
                let outcome = outcomes[client]?[summary.record.round]
                let kind = outcome == nil ? "" : outcome == "ok" ? "ok" : outcome!.hasPrefix("skipped") ? "skipped" : "failed"
                html += "<td class=\"\(kind)\">\(escape(outcome ?? ""))</td>"
            }
            html += "</tr>"
        }
        return html + "</table>\n"
    }

    static func roundTable(_ rounds: [FLRoundSummary]) -> String {
        var html = "<h2>Rounds</h2><table id=\"rounds\"><tr><th>round</th><th>fit</th><th>failures</th><th>loss</th><th>seconds</th><th>sent</th><th>received</th></tr>"
        for summary in rounds {
            let r = summary.record
            html += "<tr><td>\(r.round)</td><td>\(r.fitResults)/\(r.fitClients.count)</td><td>\(r.fitFailures.count + r.evaluateFailures.count)</td>"
            html += "<td>\(r.loss.map { String(format: "%.4f", $0) } ?? "")</td><td>\(String(format: "%.2f", summary.seconds))</td>"
            html += "<td>\(kilobytes(summary.bytesSent))</td><td>\(kilobytes(summary.bytesReceived))</td></tr>"
        }
        return html + "</table>\n"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
