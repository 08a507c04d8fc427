import Foundation
import TernRuntime

/// The report as one self-contained HTML page: the table, a latency chart (p50/p95/p99 per
/// variant) and an accuracy chart with 95 % intervals, as inline SVG; no scripts, no requests.
public enum ReportHTML {
    /// The report as a complete HTML document: the variant and comparison tables, the latency and accuracy charts, and
    /// the events.
    public static func render(_ report: ExperimentReport) -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>Experiment \(escape(report.experiment))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
            table { border-collapse: collapse; margin: 1em 0; }
            th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
            th:first-child, td:first-child { text-align: left; }
            .failing { color: #b00020; font-weight: bold; } .holding { color: #1b5e20; }
            svg text { font: 12px system-ui, sans-serif; }
            </style></head><body>
            <h1>Experiment <code>\(escape(report.experiment))</code></h1>
            <p>Status: <b>\(report.status.rawValue)</b>\(report.reason.map { " — " + escape($0) } ?? "")\
            \(report.winner.map { " · winner: <b>" + escape($0) + "</b>" } ?? "") · routing key: <code>\(escape(report.routingKey))</code></p>
            <p class="\(report.verdict.outcome == .failing ? "failing" : "holding")">Guardrails: \(report.verdict.outcome.rawValue.replacingOccurrences(of: "_", with: " "))\
            \(report.verdict.reasons.isEmpty ? "" : ": " + report.verdict.reasons.map(escape).joined(separator: "; "))</p>
            <table id="variants"><tr><th>variant</th><th>model</th><th>weight</th><th>requests</th><th>error rate</th>\
            <th>mean ms</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>mean confidence</th><th>labelled</th><th>accuracy (95 % CI)</th></tr>

            """
        for v in report.variants {
            let accuracy = v.accuracy.map { a in
                pct(a) + (v.accuracyCI95.map { " (" + pct($0[0]) + "–" + pct($0[1]) + ")" } ?? "")
            } ?? "–"
            html += "<tr class=\"variant\"><td>\(escape(v.name))\(v.shadow ? " (shadow)" : "")</td><td>\(escape(v.model))\(v.version.map { " v\($0)" } ?? "")</td>"
            html += "<td>\(v.shadow ? "–" : num(v.weight, 0))</td><td>\(v.requests)</td><td>\(v.errorRate.map(pct) ?? "–")</td>"
            html += "<td>\(v.latencyMs.map { num($0.mean, 2) } ?? "–")</td><td>\(v.latencyMs.map { num($0.p50, 2) } ?? "–")</td>"
            html += "<td>\(v.latencyMs.map { num($0.p95, 2) } ?? "–")</td><td>\(v.latencyMs.map { num($0.p99, 2) } ?? "–")</td>"
            html += "<td>\(v.meanConfidence.map { num($0, 3) } ?? "–")</td><td>\(v.labelled)</td><td>\(accuracy)</td></tr>\n"
        }
        html += "</table>\n<h2>Against the control</h2>\n<table><tr><th>variant</th><th>latency: Mann-Whitney p</th><th>P(slower)</th><th>p99 ratio</th>"
        html += "<th>error rate Δ (p)</th><th>accuracy Δ (p, Cohen's h)</th></tr>\n"
        for c in report.comparisons {
            html += "<tr><td>\(escape(c.variant)) vs \(escape(c.control))</td><td>\(c.latency.map { sci($0.p) } ?? "–")</td>"
            html += "<td>\(c.latency.map { num($0.probabilityOfSuperiority, 3) } ?? "–")</td><td>\(c.p99Ratio.map { num($0, 2) } ?? "–")</td>"
            html += "<td>\(c.errorRate.map { points($0.difference) + " (" + sci($0.p) + ")" } ?? "–")</td>"
            html += "<td>\(c.accuracy.map { points($0.difference) + " (" + sci($0.p) + ", h = " + num($0.cohensH, 2) + ")" } ?? "–")</td></tr>\n"
        }
        html += "</table>\n"
        if let srm = report.sampleRatio {
            html += "<p>Sample ratio: χ² = \(num(srm.chiSquare, 2)), p = \(sci(srm.p))\(srm.mismatch ? " — <b class=\"failing\">mismatch</b>" : " (consistent with the weights)")</p>\n"
        }
        html += "<h2>Latency</h2>\n" + latencyChart(report.variants) + "\n<h2>Accuracy</h2>\n" + accuracyChart(report.variants) + "\n"
        if !report.events.isEmpty {
            html += "<h2>Events</h2>\n<ul>\n"
            for event in report.events {
                html += "<li>\(escape(LifecycleEvent.iso8601(Date(timeIntervalSince1970: event.time)))) <b>\(escape(event.kind))</b> \(escape(event.detail))</li>\n"
            }
            html += "</ul>\n"
        }
        return html + "</body></html>\n"
    }

    /// Horizontal bars: p50, p95 and p99 of each variant on one scale.
    static func latencyChart(_ variants: [ExperimentReport.VariantReport]) -> String {
        let rows = variants.filter { $0.latencyMs != nil }
        guard let top = rows.map({ $0.latencyMs!.p99 }).max(), top > 0 else { return "<p>No answered requests yet.</p>" }
        let width = 640.0, left = 150.0, rowHeight = 54.0
        var svg = "<svg id=\"latency-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width + left + 80))\" height=\"\(Int(Double(rows.count) * rowHeight + 30))\">"
        let colours = [("p50", "#1f77b4"), ("p95", "#ff7f0e"), ("p99", "#d62728")]
        for (i, v) in rows.enumerated() {
            let y = Double(i) * rowHeight + 10
            svg += "<text x=\"0\" y=\"\(Int(y + 26))\">\(escape(v.name))</text>"
            let values = [v.latencyMs!.p50, v.latencyMs!.p95, v.latencyMs!.p99]
            for (j, value) in values.enumerated() {
                let w = max(1, value / top * width)
                svg += "<rect x=\"\(Int(left))\" y=\"\(Int(y + Double(j) * 14))\" width=\"\(num(w, 1))\" height=\"12\" fill=\"\(colours[j].1)\"/>"
                svg += "<text x=\"\(num(left + w + 4, 1))\" y=\"\(Int(y + Double(j) * 14 + 10))\">\(colours[j].0) \(num(value, 2)) ms</text>"
            }
        }
        return svg + "</svg>"
    }

    /// Accuracy of each labelled variant as a dot with its 95 % interval.
    static func accuracyChart(_ variants: [ExperimentReport.VariantReport]) -> String {
        let rows = variants.filter { $0.accuracy != nil }
        guard !rows.isEmpty else { return "<p>No feedback labels yet.</p>" }
        let width = 640.0, left = 150.0, rowHeight = 30.0
        var svg = "<svg id=\"accuracy-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width + left + 40))\" height=\"\(Int(Double(rows.count) * rowHeight + 40))\">"
        for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
            let x = left + tick * width
            svg += "<line x1=\"\(num(x, 1))\" y1=\"0\" x2=\"\(num(x, 1))\" y2=\"\(Int(Double(rows.count) * rowHeight + 5))\" stroke=\"#ddd\"/>"
            svg += "<text x=\"\(num(x - 10, 1))\" y=\"\(Int(Double(rows.count) * rowHeight + 25))\">\(Int(tick * 100))%</text>"
        }
        for (i, v) in rows.enumerated() {
            let y = Double(i) * rowHeight + 15
            svg += "<text x=\"0\" y=\"\(Int(y + 4))\">\(escape(v.name))</text>"
            if let ci = v.accuracyCI95 {
                svg += "<line x1=\"\(num(left + ci[0] * width, 1))\" y1=\"\(Int(y))\" x2=\"\(num(left + ci[1] * width, 1))\" y2=\"\(Int(y))\" stroke=\"#444\" stroke-width=\"2\"/>"
            }
            svg += "<circle cx=\"\(num(left + v.accuracy! * width, 1))\" cy=\"\(Int(y))\" r=\"5\" fill=\"#2ca02c\"/>"
        }
        return svg + "</svg>"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func num(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
    static func pct(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
    static func points(_ value: Double) -> String { String(format: "%+.1f pt", value * 100) }
    static func sci(_ value: Double) -> String { String(format: "%.2g", value) }
}
