import Foundation
import GRDB
import GRDBSQLite
import Synchronization

extension ExperimentStore {
    /// Records written by one INSERT statement: a statement per record spent half the writer's
    /// time starting statements (32 rows of 10 values stay far below SQLite's variable limit).
    static let rowsPerStatement = 32

    /// Writes `records` in one transaction, bound through SQLite's C API: the writer's cost per
    /// record is most of what an experiment costs a busy device. Full chunks go through one
    /// statement of `rowsPerStatement` rows, the rest through one of its own size.
    public func insert(_ records: [ExperimentRecord]) throws {
        try insert([records])
    }

    /// Writes several arrays of records in one transaction.
    public func insert(_ batches: [[ExperimentRecord]]) throws {
        let count = batches.reduce(0) { $0 + $1.count }
        guard count > 0 else { return }
        try database.writeWithoutTransaction { db in
            var added: [RequestKeyIndex.Entry] = []
            added.reserveCapacity(count)
            try db.inTransaction {
                added.removeAll(keepingCapacity: true)
                for records in batches where !records.isEmpty { try insertRows(db, records, keys: &added) }
                try attachRecentLabels(db, batches, added)
                return .commit
            }
            // Committed: the records are findable from now on.
            let full = keys.withLock { index in
                index.tail += added
                return index.tail.count >= index.segmentRows
            }
            // The records are in: a seal that fails leaves the tail as it was (still searched),
            // and the next batch tries again.
            if full { try? sealSegments(db) }
        }
    }

    /// Labels the records just inserted whose ids had a label lately (`added` holds their keys
    /// and rows, in the order of `batches`). One dictionary probe per record while labels are
    /// recent; none when there are none.
    private func attachRecentLabels(_ db: Database, _ batches: [[ExperimentRecord]], _ added: [RequestKeyIndex.Entry]) throws {
        var matches: [(row: Int64, label: String, time: Double)] = []
        recentLabels.withLock { recent in
            guard !recent.isEmpty else { return }
            var n = 0
            for records in batches {
                for record in records {
                    defer { n += 1 }
                    guard let labels = recent.labels(forKey: added[n].key) else { continue }
                    for entry in labels where entry.requestID == record.requestID {
                        matches.append((added[n].row, entry.label, entry.time))
                    }
                }
            }
        }
        guard !matches.isEmpty else { return }
        let attach = try db.makeStatement(sql: "INSERT OR REPLACE INTO ab_labels (row, label, time) VALUES (?, ?, ?)")
        for match in matches { try attach.execute(arguments: [match.row, match.label, match.time]) }
    }

    /// Writes the full segments of the request-id keys, each in its own transaction.
    private func sealSegments(_ db: Database) throws {
        while true {
            let index = keys.withLock { $0 }
            var sealed = 0
            try db.inTransaction {
                sealed = try index.sealOne(db)
                return .commit
            }
            guard sealed > 0 else { return }
            keys.withLock { $0.tail.removeFirst(sealed) }
        }
    }

    /// The rows of one batch; `keys` gets each one's request-id key and row.
    private func insertRows(_ db: Database, _ records: [ExperimentRecord], keys: inout [RequestKeyIndex.Entry]) throws {
        // The texts of a chunk are copied into one buffer and bound in place (SQLITE_STATIC):
        // binding them as transient made SQLite copy each into memory of its own.
        var arena: [UInt8] = []
        var texts: [Range<Int>?] = []
        var start = 0
        // Prepared once per batch (a lookup in the statement cache hashed and compared the
        // whole SQL text of 32 rows for every chunk).
        var full: Statement?
        while start < records.count {
            let chunk = start..<min(start + Self.rowsPerStatement, records.count)
            start = chunk.upperBound
            let statement: Statement
            if chunk.count == Self.rowsPerStatement {
                if full == nil { full = try db.makeStatement(sql: Self.fullInsertSQL) }
                statement = full!
            } else {
                statement = try db.makeStatement(sql: Self.insertSQL(rows: chunk.count))
            }
            let handle = statement.sqliteStatement
            arena.removeAll(keepingCapacity: true)
            texts.removeAll(keepingCapacity: true)
            // Fields are read in place (a record copied out of the array retained each text).
            for i in chunk {
                texts.append(arena.append(records[i].experiment))
                texts.append(arena.append(records[i].variant))
                texts.append(arena.append(records[i].requestID))
                texts.append(arena.append(records[i].subject))
                texts.append(records[i].predictedInteger == nil ? arena.append(records[i].prediction) : nil)
                texts.append(arena.append(records[i].error))
            }
            let code = arena.withUnsafeBufferPointer { bytes -> Int32 in
                let base = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!)  // valid even for "" (not NULL)
                func text(_ index: Int32, _ range: Range<Int>?) {
                    guard let range else { sqlite3_bind_null(handle, index); return }
                    _ = sqlite3_bind_text(handle, index, base.advanced(by: range.lowerBound).assumingMemoryBound(to: CChar.self), Int32(range.count), nil)
                }
                for (n, i) in chunk.enumerated() {
                    let p = Int32(n * Self.columns), t = n * 6
                    let id = texts[t + 2]!
                    keys.append(RequestKeyIndex.Entry(key: RequestKeyIndex.key(UnsafeRawBufferPointer(start: base.advanced(by: id.lowerBound), count: id.count)), row: 0))
                    sqlite3_bind_double(handle, p + 1, records[i].time)
                    text(p + 2, texts[t])
                    text(p + 3, texts[t + 1])
                    text(p + 4, id)
                    text(p + 5, texts[t + 3])
                    sqlite3_bind_int64(handle, p + 6, records[i].latencyUs)
                    if let confidence = records[i].confidence { sqlite3_bind_double(handle, p + 7, confidence) } else { sqlite3_bind_null(handle, p + 7) }
                    if let predicted = records[i].predictedInteger {
                        sqlite3_bind_int64(handle, p + 8, predicted)  // TEXT affinity stores it as its decimal text
                    } else {
                        text(p + 8, texts[t + 4])
                    }
                    text(p + 9, texts[t + 5])
                    sqlite3_bind_int(handle, p + 10, records[i].shadow ? 1 : 0)
                }
                let code = sqlite3_step(handle)
                sqlite3_reset(handle)
                sqlite3_clear_bindings(handle)  // no pointer into the arena outlives it
                return code
            }
            guard code == SQLITE_DONE else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
            // SQLite numbered the rows max + 1, max + 2, …: the last one ends the chunk.
            var row = db.lastInsertedRowID - Int64(chunk.count)
            for n in keys.indices.suffix(chunk.count) {
                row += 1
                keys[n].row = row
            }
        }
    }

    static let fullInsertSQL = insertSQL(rows: rowsPerStatement)

    /// `INSERT … VALUES (…), (…)` for `rows` records.
    static func insertSQL(rows: Int) -> String {
        "INSERT INTO ab_requests (time, experiment, variant, request_id, subject, latency_us, confidence, prediction, error, shadow) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: rows).joined(separator: ", ")
    }

    /// Values bound per record.
    static let columns = 10

    /// Deletes an experiment's oldest records beyond `maxRows` and those older than `maxDays`.
    public func enforceRetention(experiment: String, maxRows: Int?, maxDays: Double?, now: Double = Date().timeIntervalSince1970) throws {
        try database.writeWithoutTransaction { db in
            var emptied = false
            try db.inTransaction {
                if let maxDays {
                    try db.execute(sql: "DELETE FROM ab_requests WHERE experiment = ? AND time < ?", arguments: [experiment, now - maxDays * 86_400])
                }
                if let maxRows {
                    try db.execute(
                        sql: """
                            DELETE FROM ab_requests WHERE experiment = ?1 AND id <= (
                                SELECT id FROM ab_requests WHERE experiment = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)
                            """, arguments: [experiment, max(maxRows, 0)])
                }
                // Per label, one lookup of its record (NOT IN would list every request).
                try db.execute(sql: "DELETE FROM ab_labels WHERE NOT EXISTS (SELECT 1 FROM ab_requests r WHERE r.id = ab_labels.row)")
                let oldest = try Int64.fetchOne(db, sql: "SELECT MIN(id) FROM ab_requests")
                // Empty: SQLite numbers the next records from 1 again, so no key may outlive them.
                emptied = oldest == nil
                try RequestKeyIndex.dropSegments(db, below: oldest ?? .max)
                return .commit
            }
            if emptied { keys.withLock { $0.tail.removeAll() } }
        }
    }
}

extension [UInt8] {
    /// Appends a text's UTF-8 and returns where it lies (nil for nil).
    fileprivate mutating func append(_ text: String?) -> Range<Int>? {
        guard var text else { return nil }
        let start = count
        text.withUTF8 { append(contentsOf: $0) }  // one copy of the contiguous bytes
        return start..<count
    }
}
