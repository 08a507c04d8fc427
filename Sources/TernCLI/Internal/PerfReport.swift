import Foundation

/// Formats `tern perf` results as a table and CSV, with each mode's p50 compared to the
/// in-process API and throughput compared to ONNX Runtime called directly.
enum PerfReport {
    struct Row {
        var mode: String
        var concurrency: Int
        var batch: Int
        var result: LoadGenerator.Result
    }

    static func line(_ row: Row) -> String {
        let r = row.result
        return String(
            format: "%@ c=%-3d %10.1f req/s  p50 %8llu us  p90 %8llu us  p95 %8llu us  p99 %8llu us  errors %d",
            row.mode.padding(toLength: 12, withPad: " ", startingAt: 0) as NSString, row.concurrency, r.throughput, r.percentile(50), r.percentile(90), r.percentile(95), r.percentile(99), r.errors)
    }

    static func table(_ rows: [Row]) -> String {
        var out = "| mode | conc | batch | req/s | infer/s | p50 µs | p90 µs | p95 µs | p99 µs | errors | p50 − in-process µs | req/s ÷ direct ORT |\n"
        out += "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for row in rows {
            let r = row.result
            let base = rows.first { $0.mode == "in-process" && $0.concurrency == row.concurrency }
            let direct = rows.first { $0.mode == "direct" && $0.concurrency == row.concurrency }
            let delta = base.map { String(Int64(r.percentile(50)) - Int64($0.result.percentile(50))) } ?? "–"
            let ratio = direct.map { String(format: "%.2f", r.throughput / max($0.result.throughput, 1e-9)) } ?? "–"
            out += String(
                format: "| %@ | %d | %d | %.1f | %.1f | %llu | %llu | %llu | %llu | %d | %@ | %@ |\n",
                row.mode as NSString, row.concurrency, row.batch, r.throughput, r.throughput * Double(row.batch),
                r.percentile(50), r.percentile(90), r.percentile(95), r.percentile(99), r.errors, delta as NSString, ratio as NSString)
        }
        return out
    }

    static func csv(_ rows: [Row]) -> String {
        var out = "mode,concurrency,batch,requests_per_second,inferences_per_second,p50_us,p90_us,p95_us,p99_us,errors\n"
        for row in rows {
            let r = row.result
            out += "\(row.mode),\(row.concurrency),\(row.batch),\(String(format: "%.1f", r.throughput)),\(String(format: "%.1f", r.throughput * Double(row.batch))),\(r.percentile(50)),\(r.percentile(90)),\(r.percentile(95)),\(r.percentile(99)),\(r.errors)\n"
        }
        return out
    }
}
