import Foundation
import GRDB
import Logging
import TernRuntime

/// The lifecycle history in an SQLite file (GRDB, WAL): every load, swap, rejected swap, rollback,
/// unload and eviction with its versions, gate results and duration. Survives restarts; events
/// older than the newest `retainedEvents` are deleted as new ones arrive, so the file stays small
/// on a device.
public final class SQLiteLifecycleHistory: LifecycleHistory {
    /// One connection (a queue) in WAL mode: events are rare, and a pool's extra reader
    /// connections would cost memory on a small device.
    private let database: DatabaseQueue
    private let retainedEvents: Int
    private let logger: Logger

    /// Opens (creating it and its folder if needed) the history database at `path`, keeping the newest `retainedEvents`
    /// events and logging write failures to `logger`.
    public init(path: String, retainedEvents: Int = 10_000, logger: Logger) throws {
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.journalMode = .wal
        database = try DatabaseQueue(path: path, configuration: configuration)
        self.retainedEvents = max(retainedEvents, 1)
        self.logger = logger
        var migrator = DatabaseMigrator()
        migrator.registerMigration("lifecycle_events") { db in
            try db.create(table: "lifecycle_events") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .text).notNull()
                t.column("model", .text).notNull().indexed()
                t.column("action", .text).notNull()
                t.column("from_versions", .text).notNull()
                t.column("to_versions", .text).notNull()
                t.column("gates", .text).notNull()
                t.column("duration_ms", .double)
                t.column("detail", .text).notNull()
            }
        }
        migrator.registerMigration("lifecycle_events_actor") { db in
            try db.alter(table: "lifecycle_events") { t in t.add(column: "actor", .text).notNull().defaults(to: "") }
        }
        migrator.registerMigration("model_decisions") { db in
            try db.create(table: "model_decisions") { t in
                t.primaryKey("model", .text)
                t.column("decisions", .text).notNull()
                t.column("updated", .text).notNull()
            }
        }
        try migrator.migrate(database)
    }

    /// Pins, rollback target, served and rejected versions: one JSON row per model, replaced whole.
    public func save(_ decisions: ModelDecisions?, model: String) {
        do {
            try database.write { db in
                if let decisions {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO model_decisions (model, decisions, updated) VALUES (?, ?, ?)",
                        arguments: [model, Self.json(decisions), LifecycleEvent.iso8601(Date())])
                } else {
                    try db.execute(sql: "DELETE FROM model_decisions WHERE model = ?", arguments: [model])
                }
            }
        } catch {
            // Logged, not thrown: the swap itself has happened. A restart then starts from the version policy.
            logger.error("cannot save the model's lifecycle decisions", metadata: ["model": .string(model), "error": .string("\(error)")])
        }
    }

    /// Every model's saved decisions, by model name; unreadable rows are skipped with a warning, and a read failure
    /// gives none.
    public func savedDecisions() -> [String: ModelDecisions] {
        do {
            return try database.read { db in
                var saved: [String: ModelDecisions] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT model, decisions FROM model_decisions") {
                    let model: String = row["model"]
                    if let decisions: ModelDecisions = Self.decode(row["decisions"]) {
                        saved[model] = decisions
                    } else {
                        logger.warning("ignoring unreadable lifecycle decisions", metadata: ["model": .string(model)])
                    }
                }
                return saved
            }
        } catch {
            logger.error("cannot read the saved lifecycle decisions", metadata: ["error": .string("\(error)")])
            return [:]
        }
    }

    /// Appends an event and deletes those beyond the newest `retainedEvents`; a write failure is logged, not thrown.
    public func record(_ event: LifecycleEvent) {
        do {
            try database.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO lifecycle_events (time, model, action, from_versions, to_versions, gates, duration_ms, detail, actor)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        event.time, event.model, event.action, Self.json(event.fromVersions), Self.json(event.toVersions),
                        Self.json(event.gates), event.durationMs, event.detail, event.by,
                    ])
                try db.execute(
                    sql: "DELETE FROM lifecycle_events WHERE id <= (SELECT MAX(id) FROM lifecycle_events) - ?",
                    arguments: [retainedEvents])
            }
        } catch {
            // History is a record, not a gate: a full disk must not stop a swap.
            logger.error("cannot write the lifecycle history", metadata: ["error": .string("\(error)")])
        }
    }

    /// The newest `limit` events of `model` (of every model when nil), oldest first; empty when the read fails.
    public func events(model: String?, limit: Int) -> [LifecycleEvent] {
        do {
            return try database.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT * FROM (SELECT * FROM lifecycle_events WHERE ?1 IS NULL OR model = ?1 ORDER BY id DESC LIMIT ?2)
                        ORDER BY id
                        """,
                    arguments: [model, max(limit, 0)])
                return rows.map { row in
                    var event = LifecycleEvent(
                        model: row["model"], action: row["action"],
                        fromVersions: Self.decode(row["from_versions"]) ?? [], toVersions: Self.decode(row["to_versions"]) ?? [],
                        gates: Self.decode(row["gates"]) ?? [], durationMs: row["duration_ms"], detail: row["detail"], by: row["actor"])
                    event.time = row["time"]
                    return event
                }
            }
        } catch {
            logger.error("cannot read the lifecycle history", metadata: ["error": .string("\(error)")])
            return []
        }
    }

    private static func json<T: Encodable>(_ value: T) -> String {
        (try? String(decoding: JSONEncoder().encode(value), as: UTF8.self)) ?? "[]"
    }

    private static func decode<T: Decodable>(_ text: String?) -> T? {
        text.flatMap { try? JSONDecoder().decode(T.self, from: Data($0.utf8)) }
    }
}
