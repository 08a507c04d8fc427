import Foundation
import GRDB
import GRDBSQLite

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
    let database: DatabaseQueue

    /// `path` nil: an in-memory database (tests).
    public init(path: String?) throws {
        if let path {
            try FileManager.default.createDirectory(at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.journalMode = .wal
            // WAL with synchronous=NORMAL: a committed batch survives a crash of the process (not
            // necessarily a power cut), and commits do not wait for the disk.
            configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            database = try DatabaseQueue(path: path, configuration: configuration)
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
        try migrator.migrate(database)
    }

    /// Records written by one INSERT statement: a statement per record spent half the writer's
    /// time starting statements (32 rows of 10 values stay far below SQLite's variable limit).
    static let rowsPerStatement = 32

    /// Writes `records` in one transaction, bound through SQLite's C API: the writer's cost per
    /// record is most of what an experiment costs a busy device. Full chunks go through one
    /// statement of `rowsPerStatement` rows, the rest through one of its own size.
    public func insert(_ records: [ExperimentRecord]) throws {
        guard !records.isEmpty else { return }
        try database.write { db in
            // The texts of a chunk are copied into one buffer and bound in place (SQLITE_STATIC):
            // binding them as transient made SQLite copy each into memory of its own.
            var arena: [UInt8] = []
            var texts: [Range<Int>?] = []
            var start = records.startIndex
            // Prepared once per batch (a lookup in the statement cache hashed and compared the
            // whole SQL text of 32 rows for every chunk).
            var full: Statement?
            while start < records.endIndex {
                let chunk = records[start..<min(start + Self.rowsPerStatement, records.endIndex)]
                start = chunk.endIndex
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
                for r in chunk {
                    texts.append(arena.append(r.experiment))
                    texts.append(arena.append(r.variant))
                    texts.append(arena.append(r.requestID))
                    texts.append(arena.append(r.subject))
                    texts.append(r.predictedInteger == nil ? arena.append(r.prediction) : nil)
                    texts.append(arena.append(r.error))
                }
                let code = arena.withUnsafeBufferPointer { bytes -> Int32 in
                    func text(_ index: Int32, _ range: Range<Int>?) {
                        guard let range else { sqlite3_bind_null(handle, index); return }
                        // A valid pointer even for "" (which is not NULL).
                        let base = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!).advanced(by: range.lowerBound)
                        _ = sqlite3_bind_text(handle, index, base.assumingMemoryBound(to: CChar.self), Int32(range.count), nil)
                    }
                    for (row, r) in chunk.enumerated() {
                        let p = Int32(row * 10), t = row * 6
                        sqlite3_bind_double(handle, p + 1, r.time)
                        text(p + 2, texts[t])
                        text(p + 3, texts[t + 1])
                        text(p + 4, texts[t + 2])
                        text(p + 5, texts[t + 3])
                        sqlite3_bind_int64(handle, p + 6, r.latencyUs)
                        if let confidence = r.confidence { sqlite3_bind_double(handle, p + 7, confidence) } else { sqlite3_bind_null(handle, p + 7) }
                        if let predicted = r.predictedInteger {
                            sqlite3_bind_int64(handle, p + 8, predicted)  // TEXT affinity stores it as its decimal text
                        } else {
                            text(p + 8, texts[t + 4])
                        }
                        text(p + 9, texts[t + 5])
                        sqlite3_bind_int(handle, p + 10, r.shadow ? 1 : 0)
                    }
                    let code = sqlite3_step(handle)
                    sqlite3_reset(handle)
                    sqlite3_clear_bindings(handle)  // no pointer into the arena outlives it
                    return code
                }
                guard code == SQLITE_DONE else {
                    throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
                }
            }
        }
    }

    static let fullInsertSQL = insertSQL(rows: rowsPerStatement)

    /// `INSERT … VALUES (…), (…)` for `rows` records.
    static func insertSQL(rows: Int) -> String {
        "INSERT INTO ab_requests (time, experiment, variant, request_id, subject, latency_us, confidence, prediction, error, shadow) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: rows).joined(separator: ", ")
    }

    /// Labelled answers and correct predictions per variant (feedback joined to the records).
    /// CROSS JOIN keeps the feedback table outside: each label is one lookup in the request-id
    /// index, where SQLite's own choice scanned every record of the experiment — on each
    /// guardrail check, ever slower as the table grows.
    public func labelledCounts(experiment: String) throws -> [String: (labelled: Int, correct: Int)] {
        try database.read { db in
            var counts: [String: (Int, Int)] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT r.variant AS variant, COUNT(*) AS labelled, SUM(r.prediction = f.label) AS correct
                    FROM ab_feedback f CROSS JOIN ab_requests r ON r.request_id = f.request_id
                    WHERE r.experiment = ? AND r.error IS NULL GROUP BY r.variant
                    """, arguments: [experiment])
            {
                counts[row["variant"]] = (row["labelled"], row["correct"] ?? 0)
            }
            return counts
        }
    }

    /// Attaches ground-truth labels to request ids (a later label replaces an earlier one).
    /// Returns how many of the ids were routed by an experiment.
    @discardableResult
    public func addFeedback(_ labels: [(requestID: String, label: String)], time: Double = Date().timeIntervalSince1970) throws -> Int {
        try database.write { db in
            let statement = try db.makeStatement(sql: "INSERT OR REPLACE INTO ab_feedback (request_id, label, time) VALUES (?, ?, ?)")
            var known = 0
            for (id, label) in labels {
                try statement.execute(arguments: [id, label, time])
                known += try Int.fetchOne(db, sql: "SELECT COUNT(*) > 0 FROM ab_requests WHERE request_id = ?", arguments: [id]) ?? 0
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
                    SELECT r.variant AS variant, COUNT(*) AS labelled, SUM(r.prediction = f.label) AS correct
                    FROM ab_feedback f CROSS JOIN ab_requests r ON r.request_id = f.request_id
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
        try database.write { db in
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
            // Per label, one lookup in the request-id index (NOT IN would list every request).
            try db.execute(sql: "DELETE FROM ab_feedback WHERE NOT EXISTS (SELECT 1 FROM ab_requests r WHERE r.request_id = ab_feedback.request_id)")
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
        guard let text else { return nil }
        let start = count
        append(contentsOf: text.utf8)
        return start..<count
    }
}
