import Foundation
import GRDB
import GRDBSQLite
import Synchronization

extension ExperimentStore {
    /// The schema's migrations, in order: requests, feedback, definitions and events (v1), a plain rowid for
    /// requests (v2), labels by record and request-id key runs instead of an index (v3).
    static func makeMigrator() -> DatabaseMigrator {
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
        return migrator
    }
}
