import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// One request an experiment routed (or mirrored to a shadow), as the metrics store keeps it.
public struct ExperimentRecord: Sendable, Equatable {
    /// Seconds since 1970.
    public var time: Double
    public var experiment: String
    public var variant: String
    public var requestID: String
    public var subject: String?
    public var latencyUs: Int64
    public var confidence: Double?
    /// The prediction as text (a string output, or several rows joined with ',').
    public var prediction: String?
    /// The prediction when it is one integer (a class index or label): stored as its decimal
    /// text like `prediction`, without making a string on the request path.
    public var predictedInteger: Int64?
    /// nil when the variant answered.
    public var error: String?
    public var shadow: Bool

    public init(
        time: Double, experiment: String, variant: String, requestID: String, subject: String? = nil, latencyUs: Int64,
        confidence: Double? = nil, prediction: String? = nil, error: String? = nil, shadow: Bool = false
    ) {
        self.time = time
        self.experiment = experiment
        self.variant = variant
        self.requestID = requestID
        self.subject = subject
        self.latencyUs = latencyUs
        self.confidence = confidence
        self.prediction = prediction
        self.error = error
        self.shadow = shadow
    }
}

/// What a report needs of one variant, read back from the store.
public struct VariantData: Sendable, Equatable {
    public var requests = 0
    public var errors = 0
    /// Latencies of the answered requests, in ms.
    public var latenciesMs: [Double] = []
    public var confidenceSum = 0.0
    public var confidenceCount = 0
    /// Answered requests with a feedback label, and how many of them were predicted right.
    public var labelled = 0
    public var correct = 0
    public var shadow = false

    public init() {}
}

/// An event in an experiment's life: created, weight changed, stopped by a guardrail, promoted.
public struct ExperimentEvent: Sendable, Equatable, Codable {
    public var time: Double
    public var experiment: String
    public var kind: String
    public var detail: String
}

/// Experiment metrics in SQLite (GRDB, WAL): routed requests, feedback labels, experiment
/// definitions and state, and events. Writes come in batches from `ExperimentRecorder`, off the
/// request path; a committed batch survives a crash of the process.
public final class ExperimentStore: Sendable {
    /// A pool on a file (WAL: reports read a snapshot while the writer goes on committing, so a
    /// long report never holds records back); a queue in memory (tests).
    let database: any DatabaseWriter
    /// Finds the records of a request id for feedback (see `RequestKeyIndex`). Read and changed
    /// only inside the database queue, so that it always agrees with what is committed.
    private let keys: Mutex<RequestKeyIndex>
    /// Labels received lately, by key: records written after their label (a shadow's copy runs
    /// later than the served answer) get it as they are inserted.
    private let recentLabels = Mutex(RecentLabels(capacity: 65_536))

    /// `path` nil: an in-memory database (tests). `segmentRows`: records per sorted run of the
    /// request-id keys (smaller in tests).
    public init(path: String?, segmentRows: Int = 65_536) throws {
        if let path {
            try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.journalMode = .wal
            // WAL with synchronous=NORMAL: a committed batch survives a crash of the process (not
            // necessarily a power cut), and commits do not wait for the disk.
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            database = try DatabasePool(path: path, configuration: configuration)
        } else {
            database = try DatabaseQueue()
        }
        var migrator = DatabaseMigrator()
        migrator.registerMigration("experiments_v1") { db in
            try db.create(table: "ab_requests") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("experiment", .text).notNull()
                t.column("variant", .text).notNull()
                t.column("request_id", .text).notNull()
                t.column("subject", .text)
                t.column("latency_us", .integer).notNull()
                t.column("confidence", .double)
                t.column("prediction", .text)
                t.column("error", .text)
                t.column("shadow", .boolean).notNull()
            }
            // Only the index feedback needs: every index is paid on each insert; reports scan.
            try db.create(index: "ab_requests_by_request", on: "ab_requests", columns: ["request_id"])
            try db.create(table: "ab_feedback") { t in
                t.primaryKey("request_id", .text)
                t.column("label", .text).notNull()
                t.column("time", .double).notNull()
            }
            try db.create(table: "ab_experiments") { t in
                t.primaryKey("name", .text)
                t.column("spec", .text).notNull()
                t.column("state", .text).notNull()
                t.column("source", .text).notNull()
                t.column("created", .double).notNull()
                t.column("updated", .double).notNull()
            }
            try db.create(table: "ab_events") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("experiment", .text).notNull().indexed()
                t.column("kind", .text).notNull()
                t.column("detail", .text).notNull()
            }
        }
        migrator.registerMigration("experiments_v2_plain_rowid") { db in
            // AUTOINCREMENT updated sqlite_sequence on every insert: about a fifth of the
            // writer's cost per record. A plain rowid is max + 1 as well (retention deletes the
            // oldest rows, so ids keep growing).
            try db.execute(sql: """
                CREATE TABLE ab_requests_v2 (
                    id INTEGER PRIMARY KEY, time DOUBLE NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL,
                    request_id TEXT NOT NULL, subject TEXT, latency_us INTEGER NOT NULL, confidence DOUBLE, prediction TEXT,
                    error TEXT, shadow BOOLEAN NOT NULL);
                INSERT INTO ab_requests_v2 (id, time, experiment, variant, request_id, subject, latency_us, confidence, prediction, error, shadow)
                    SELECT id, time, experiment, variant, request_id, subject, latency_us, confidence, prediction, error, shadow FROM ab_requests;
                DROP TABLE ab_requests;
                ALTER TABLE ab_requests_v2 RENAME TO ab_requests;
                CREATE INDEX ab_requests_by_request ON ab_requests(request_id);
                """)
        }
        migrator.registerMigration("experiments_v3_request_keys") { db in
            // Labels are attached to the records they match when they arrive (by record id), and
            // request ids are found through sorted runs of their hashes instead of an index
            // updated by every insert (see `RequestKeyIndex`). The old labels are attached here,
            // through the old index, before it goes.
            try db.execute(sql: """
                CREATE TABLE ab_labels (row INTEGER PRIMARY KEY, label TEXT NOT NULL, time DOUBLE NOT NULL);
                INSERT OR REPLACE INTO ab_labels (row, label, time)
                    SELECT r.id, f.label, f.time FROM ab_feedback f CROSS JOIN ab_requests r ON r.request_id = f.request_id;
                DROP TABLE ab_feedback;
                DROP INDEX ab_requests_by_request;
                """)
            try RequestKeyIndex.createTables(db)
        }
        try migrator.migrate(database)
        var index = try database.read { db in try RequestKeyIndex.load(db, segmentRows: max(segmentRows, 1)) }
        // A tail longer than a segment (records written before this schema) is sealed now.
        while index.tail.count >= index.segmentRows {
            let sealed = try database.write { db in try index.sealOne(db) }
            index.tail.removeFirst(sealed)
        }
        keys = Mutex(index)
    }

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

    public func requestCount(experiment: String? = nil) throws -> Int {
        try database.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ab_requests WHERE ?1 IS NULL OR experiment = ?1", arguments: [experiment]) ?? 0
        }
    }

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

    // MARK: Definitions, state and events

    /// Stores (or replaces) an experiment's definition and state (JSON texts).
    public func saveExperiment(name: String, spec: String, state: String, source: String, now: Double = Date().timeIntervalSince1970) throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO ab_experiments (name, spec, state, source, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                    ON CONFLICT(name) DO UPDATE SET spec = ?2, state = ?3, source = ?4, updated = ?5
                    """, arguments: [name, spec, state, source, now])
        }
    }

    public func savedExperiments() throws -> [(name: String, spec: String, state: String, source: String, created: Double)] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ab_experiments ORDER BY name").map {
                ($0["name"], $0["spec"], $0["state"], $0["source"], $0["created"])
            }
        }
    }

    public func deleteExperiment(_ name: String) throws {
        try database.write { db in try db.execute(sql: "DELETE FROM ab_experiments WHERE name = ?", arguments: [name]) }
    }

    public func addEvent(_ experiment: String, kind: String, detail: String, time: Double = Date().timeIntervalSince1970) {
        try? database.write { db in
            try db.execute(sql: "INSERT INTO ab_events (time, experiment, kind, detail) VALUES (?, ?, ?, ?)", arguments: [time, experiment, kind, detail])
        }
    }

    public func events(experiment: String, limit: Int = 100) -> [ExperimentEvent] {
        (try? database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM (SELECT * FROM ab_events WHERE experiment = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                arguments: [experiment, limit]
            ).map { ExperimentEvent(time: $0["time"], experiment: $0["experiment"], kind: $0["kind"], detail: $0["detail"]) }
        }) ?? []
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
