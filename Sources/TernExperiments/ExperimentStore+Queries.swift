import Foundation
import GRDB
import GRDBSQLite
import Synchronization

extension ExperimentStore {
    /// Per variant: requests, errors, confidence and labelled accuracy since `since` (aggregated
    /// in SQL), and the latencies of the answered requests — all of them, or the newest
    /// `latencyWindow` per variant (what a periodic guardrail check reads, so that its cost does not
    /// grow with the table).
    public func variantData(experiment: String, since: Double = 0, latencyWindow: Int? = nil) throws -> [String: VariantData] {
        try database.read { db in
            var data: [String: VariantData] = [:]
            let totals = try Row.fetchAll(
                db,
                sql: """
                    SELECT variant, MAX(shadow) AS shadow, COUNT(*) AS requests, SUM(error IS NOT NULL) AS errors,
                           SUM(CASE WHEN error IS NULL THEN confidence END) AS confidence_sum,
                           COUNT(CASE WHEN error IS NULL THEN confidence END) AS confidence_count
                    FROM ab_requests WHERE experiment = ? AND time >= ? GROUP BY variant
                    """, arguments: [experiment, since])
            for row in totals {
                var entry = VariantData()
                entry.requests = row["requests"]
                entry.errors = row["errors"] ?? 0
                entry.shadow = row["shadow"] ?? false
                entry.confidenceSum = row["confidence_sum"] ?? 0
                entry.confidenceCount = row["confidence_count"] ?? 0
                let variant: String = row["variant"]
                entry.latenciesMs = try Int64.fetchAll(
                    db,
                    sql: """
                        SELECT latency_us FROM ab_requests WHERE experiment = ? AND variant = ? AND time >= ? AND error IS NULL
                        ORDER BY id DESC LIMIT ?
                        """, arguments: [experiment, variant, since, latencyWindow ?? -1]
                ).map { Double($0) / 1000 }
                data[variant] = entry
            }
            let labelled = try Row.fetchAll(
                db,
                sql: """
                    SELECT r.variant AS variant, COUNT(*) AS labelled, SUM(r.prediction = l.label) AS correct
                    FROM ab_labels l CROSS JOIN ab_requests r ON r.id = l.row
                    WHERE r.experiment = ? AND r.time >= ? AND r.error IS NULL GROUP BY r.variant
                    """, arguments: [experiment, since])
            for row in labelled {
                let variant: String = row["variant"]
                data[variant, default: VariantData()].labelled = row["labelled"]
                data[variant, default: VariantData()].correct = row["correct"] ?? 0
            }
            return data
        }
    }

    /// How many records the store holds for `experiment`, or for every experiment when nil.
    public func requestCount(experiment: String? = nil) throws -> Int {
        try database.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ab_requests WHERE ?1 IS NULL OR experiment = ?1", arguments: [experiment]) ?? 0
        }
    }
}
