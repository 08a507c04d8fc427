import Foundation
import GRDB
import GRDBSQLite
import Synchronization

extension ExperimentStore {
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

    /// Every stored experiment's definition, state, source ("api" or "file:NAME") and creation time, by name.
    public func savedExperiments() throws -> [(name: String, spec: String, state: String, source: String, created: Double)] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ab_experiments ORDER BY name").map {
                ($0["name"], $0["spec"], $0["state"], $0["source"], $0["created"])
            }
        }
    }

    /// Deletes an experiment's stored definition and state; its records and events stay.
    public func deleteExperiment(_ name: String) throws {
        try database.write { db in try db.execute(sql: "DELETE FROM ab_experiments WHERE name = ?", arguments: [name]) }
    }

    /// Appends an event to an experiment's history; a failed write is ignored.
    public func addEvent(_ experiment: String, kind: String, detail: String, time: Double = Date().timeIntervalSince1970) {
        try? database.write { db in
            try db.execute(sql: "INSERT INTO ab_events (time, experiment, kind, detail) VALUES (?, ?, ?, ?)", arguments: [time, experiment, kind, detail])
        }
    }

    /// The newest `limit` events of `experiment`, oldest first (empty when the read fails).
    public func events(experiment: String, limit: Int = 100) -> [ExperimentEvent] {
        (try? database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM (SELECT * FROM ab_events WHERE experiment = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                arguments: [experiment, limit]
            ).map { ExperimentEvent(time: $0["time"], experiment: $0["experiment"], kind: $0["kind"], detail: $0["detail"]) }
        }) ?? []
    }
}
