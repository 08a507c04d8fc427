import Foundation
import GRDB
import GRDBSQLite
import Synchronization

extension ExperimentStore {
    /// Labelled answers and correct predictions per variant (one record lookup per label).
    public func labelledCounts(experiment: String) throws -> [String: (labelled: Int, correct: Int)] {
        try database.read { db in
            var counts: [String: (Int, Int)] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT r.variant AS variant, COUNT(*) AS labelled, SUM(r.prediction = l.label) AS correct
                    FROM ab_labels l CROSS JOIN ab_requests r ON r.id = l.row
                    WHERE r.experiment = ? AND r.error IS NULL GROUP BY r.variant
                    """, arguments: [experiment])
            {
                counts[row["variant"]] = (row["labelled"], row["correct"] ?? 0)
            }
            return counts
        }
    }

    /// Attaches ground-truth labels to the records of request ids (the served answer and any
    /// shadow copies; a later label replaces an earlier one): those written so far, and those
    /// written while the label is among the last `RecentLabels` capacity received (a shadow's
    /// record comes after its served one). Returns how many of the ids matched a record so far.
    @discardableResult
    public func addFeedback(_ labels: [(requestID: String, label: String)], time: Double = Date().timeIntervalSince1970) throws -> Int {
        try database.write { db in
            let wanted = labels.map { RequestKeyIndex.key($0.requestID) }
            let candidates = try keys.withLock { try $0.candidates(db, keys: Set(wanted)) }
            let check = try db.makeStatement(sql: "SELECT request_id = ? FROM ab_requests WHERE id = ?")
            let attach = try db.makeStatement(sql: "INSERT OR REPLACE INTO ab_labels (row, label, time) VALUES (?, ?, ?)")
            var known = 0
            for ((id, label), key) in zip(labels, wanted) {
                var matched = false
                // A candidate has the id's hash; its text decides (and its row may be gone).
                for row in candidates[key] ?? [] where try Bool.fetchOne(check, arguments: [id, row]) == true {
                    try attach.execute(arguments: [row, label, time])
                    matched = true
                }
                if matched { known += 1 }
            }
            recentLabels.withLock { recent in
                for ((id, label), key) in zip(labels, wanted) { recent.add(key: key, requestID: id, label: label, time: time) }
            }
            return known
        }
    }
}

/// The last labels received, by request-id key, oldest forgotten first.
struct RecentLabels {
    struct Entry {
        var requestID: String
        var label: String
        var time: Double
    }

    let capacity: Int
    private var byKey: [Int64: [Entry]] = [:]
    private var order: [Int64] = []
    private var oldest = 0

    init(capacity: Int) { self.capacity = capacity }

    var isEmpty: Bool { byKey.isEmpty }

    func labels(forKey key: Int64) -> [Entry]? { byKey[key] }

    mutating func add(key: Int64, requestID: String, label: String, time: Double) {
        var entries = byKey[key] ?? []
        if let same = entries.firstIndex(where: { $0.requestID == requestID }) {
            entries[same] = Entry(requestID: requestID, label: label, time: time)  // a newer label for the id
            byKey[key] = entries
            return
        }
        entries.append(Entry(requestID: requestID, label: label, time: time))
        byKey[key] = entries
        // A ring of keys in arrival order: the oldest key's first entry goes when full.
        if order.count < capacity {
            order.append(key)
        } else {
            let gone = order[oldest]
            if var left = byKey[gone] {
                left.removeFirst()
                byKey[gone] = left.isEmpty ? nil : left
            }
            order[oldest] = key
            oldest = (oldest + 1) % capacity
        }
    }
}
