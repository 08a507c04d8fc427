import Foundation
import GRDB
import TernCore
import TernTraining

/// A coordinator's runs in SQLite (GRDB, WAL): each run's settings and state, each round's record
/// with its time and traffic, every client's part in every stage, and the global weights with the
/// strategy's state after each round (the last few kept), so a restarted coordinator resumes.
/// Readers (`tern fl status`, the report) see committed rounds while a run goes on.
public final class FLStore: Sendable {
    let database: any DatabaseWriter
    /// How many rounds' checkpoints are kept per run.
    public let keepCheckpoints: Int

    /// Opens (creating) the database at `path`; nil keeps it in memory (tests).
    public init(path: String?, keepCheckpoints: Int = 2) throws(TernError) {
        self.keepCheckpoints = max(1, keepCheckpoints)
        do {
            if let path {
                try FileManager.default.createDirectory(
                    at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
                var configuration = Configuration()
                configuration.journalMode = .wal
                configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
                database = try DatabasePool(path: path, configuration: configuration)
            } else {
                database = try DatabaseQueue()
            }
            try FLStore.migrator.migrate(database)
        } catch {
            throw .internalError("cannot open the federated-learning database \(path ?? ":memory:"): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("fl_v1") { db in
            try db.create(table: "fl_runs") { t in
                t.primaryKey("run", .text)
                t.column("settings", .text).notNull()
                t.column("rounds", .integer).notNull()
                t.column("status", .text).notNull()  // running, interrupted, finished
                t.column("started", .double).notNull()
                t.column("updated", .double).notNull()
                t.column("restarts", .integer).notNull().defaults(to: 0)
            }
            try db.create(table: "fl_rounds") { t in
                t.column("run", .text).notNull()
                t.column("round", .integer).notNull()
                t.column("finished", .double).notNull()
                t.column("seconds", .double).notNull()
                t.column("bytes_sent", .integer).notNull()
                t.column("bytes_received", .integer).notNull()
                t.column("fit_clients", .integer).notNull()
                t.column("fit_results", .integer).notNull()
                t.column("aggregated", .boolean).notNull()
                t.column("loss", .double)
                t.column("epsilon", .double)
                t.column("record", .text).notNull()  // the FLRoundRecord as JSON
                t.primaryKey(["run", "round"])
            }
            try db.create(table: "fl_participants") { t in
                t.column("run", .text).notNull()
                t.column("round", .integer).notNull()
                t.column("client", .text).notNull()
                t.column("stage", .text).notNull()
                t.column("outcome", .text).notNull()  // ok, a failure reason or a skip reason
                t.primaryKey(["run", "round", "client", "stage"])
            }
            try db.create(table: "fl_checkpoints") { t in
                t.column("run", .text).notNull()
                t.column("round", .integer).notNull()
                t.column("kind", .text).notNull()  // weights, m, v, momentum
                t.column("position", .integer).notNull()
                t.column("npy", .blob).notNull()
                t.primaryKey(["run", "round", "kind", "position"])
            }
            try db.create(table: "fl_accountants") { t in
                t.column("run", .text).notNull()
                t.column("round", .integer).notNull()
                t.column("state", .text).notNull()
                t.primaryKey(["run", "round"])
            }
        }
        return migrator
    }

    /// Records that `run` starts (or restarts) with these settings; a restart counts one more.
    public func begin(run: String, settings: String, rounds: Int, restarting: Bool) throws(TernError) {
        try write { db in
            let now = Date().timeIntervalSince1970
            try db.execute(
                sql: """
                    INSERT INTO fl_runs (run, settings, rounds, status, started, updated, restarts) VALUES (?, ?, ?, 'running', ?, ?, 0)
                    ON CONFLICT(run) DO UPDATE SET settings = excluded.settings, rounds = excluded.rounds, status = 'running',
                        updated = excluded.updated, restarts = restarts + ?
                    """,
                arguments: [run, settings, rounds, now, now, restarting ? 1 : 0])
        }
    }

    /// Marks `run` interrupted or finished.
    public func end(run: String, status: String) throws(TernError) {
        try write { db in
            try db.execute(sql: "UPDATE fl_runs SET status = ?, updated = ? WHERE run = ?", arguments: [status, Date().timeIntervalSince1970, run])
        }
    }

    /// Commits one completed round in one transaction: its record, the participants, and the
    /// checkpoint (weights, strategy state, privacy spent); checkpoints older than the last
    /// `keepCheckpoints` rounds are dropped.
    public func save(run: String, summary: FLRoundSummary, checkpoint: FLCheckpoint) throws(TernError) {
        let record = summary.record
        let json: String
        let accountant: String
        do {
            json = String(decoding: try FLJSON.encoder().encode(record), as: UTF8.self)
            accountant = String(decoding: try FLJSON.encoder().encode(checkpoint.accountant), as: UTF8.self)
        } catch {
            throw .internalError("cannot encode round \(record.round): \(error)")
        }
        var arrays: [(kind: String, position: Int, npy: Data)] = []
        for (index, array) in checkpoint.weights.enumerated() { arrays.append(("weights", index, try array.npy())) }
        let state = checkpoint.strategyState
        for (kind, vectors) in [("m", state.firstMoment), ("v", state.secondMoment), ("momentum", state.momentum)] {
            for (index, vector) in vectors.enumerated() {
                arrays.append((kind, index, try FLArray(dataType: .fp64, shape: [vector.count], values: vector).npy()))
            }
        }
        try write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO fl_rounds (run, round, finished, seconds, bytes_sent, bytes_received, fit_clients, fit_results,
                        aggregated, loss, epsilon, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    run, record.round, Date().timeIntervalSince1970, summary.seconds, summary.bytesSent, summary.bytesReceived,
                    record.fitClients.count, record.fitResults, record.aggregated, record.loss, record.epsilon, json,
                ])
            for (client, stage, outcome) in FLStore.participants(record) {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO fl_participants (run, round, client, stage, outcome) VALUES (?, ?, ?, ?, ?)",
                    arguments: [run, record.round, client, stage, outcome])
            }
            try db.execute(sql: "DELETE FROM fl_checkpoints WHERE run = ? AND round = ?", arguments: [run, record.round])
            for array in arrays {
                try db.execute(
                    sql: "INSERT INTO fl_checkpoints (run, round, kind, position, npy) VALUES (?, ?, ?, ?, ?)",
                    arguments: [run, record.round, array.kind, array.position, array.npy])
            }
            try db.execute(sql: "INSERT OR REPLACE INTO fl_accountants (run, round, state) VALUES (?, ?, ?)", arguments: [run, record.round, accountant])
            let oldest = record.round - keepCheckpoints
            try db.execute(sql: "DELETE FROM fl_checkpoints WHERE run = ? AND round <= ?", arguments: [run, oldest])
            try db.execute(sql: "DELETE FROM fl_accountants WHERE run = ? AND round <= ?", arguments: [run, oldest])
            try db.execute(sql: "UPDATE fl_runs SET updated = ? WHERE run = ?", arguments: [Date().timeIntervalSince1970, run])
        }
    }

    /// Each client's part in a round: (client, stage, outcome).
    static func participants(_ record: FLRoundRecord) -> [(String, String, String)] {
        var rows: [(String, String, String)] = []
        for (client, reason) in record.skipped { rows.append((client, "fit", "skipped_\(reason.rawValue)")) }
        for client in record.fitClients { rows.append((client, "fit", record.fitFailures[client]?.rawValue ?? "ok")) }
        for client in record.evaluateClients { rows.append((client, "evaluate", record.evaluateFailures[client]?.rawValue ?? "ok")) }
        return rows
    }

    /// The last checkpoint of `run`, nil when it has none.
    public func latestCheckpoint(run: String) throws(TernError) -> FLCheckpoint? {
        try read { db -> FLCheckpoint? in
            guard let round = try Int.fetchOne(db, sql: "SELECT MAX(round) FROM fl_checkpoints WHERE run = ?", arguments: [run]) else { return nil }
            var weights: [(Int, FLArray)] = []
            var moments: [String: [(Int, [Double])]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT kind, position, npy FROM fl_checkpoints WHERE run = ? AND round = ?", arguments: [run, round]) {
                let kind: String = row["kind"]
                let position: Int = row["position"]
                let array = try FLArray(npy: row["npy"], index: position)
                if kind == "weights" { weights.append((position, array)) } else { moments[kind, default: []].append((position, array.values)) }
            }
            func ordered(_ kind: String) -> [[Double]] { (moments[kind] ?? []).sorted { $0.0 < $1.0 }.map(\.1) }
            let state = FLStrategyState(firstMoment: ordered("m"), secondMoment: ordered("v"), momentum: ordered("momentum"))
            let accountantText = try String.fetchOne(db, sql: "SELECT state FROM fl_accountants WHERE run = ? AND round = ?", arguments: [run, round])
            let accountant = try accountantText.map { try FLJSON.decoder.decode(RDPAccountant.self, from: Data($0.utf8)) } ?? RDPAccountant()
            let history = try self.records(db, run: run).filter { $0.round <= round }
            return FLCheckpoint(round: round, weights: weights.sorted { $0.0 < $1.0 }.map(\.1), strategyState: state, accountant: accountant, history: history)
        }
    }

    /// The completed rounds of `run` with their time and traffic.
    public func summaries(run: String) throws(TernError) -> [FLRoundSummary] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT seconds, bytes_sent, bytes_received, record FROM fl_rounds WHERE run = ? ORDER BY round", arguments: [run]).map { row in
                let text: String = row["record"]
                return FLRoundSummary(
                    record: try FLJSON.decoder.decode(FLRoundRecord.self, from: Data(text.utf8)), seconds: row["seconds"],
                    bytesSent: row["bytes_sent"], bytesReceived: row["bytes_received"])
            }
        }
    }

    /// A run's row: its state, planned rounds and restarts.
    public func run(_ run: String) throws(TernError) -> FLRunInfo? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT run, status, rounds, restarts, started, updated FROM fl_runs WHERE run = ?", arguments: [run]).map {
                FLRunInfo(run: $0["run"], status: $0["status"], rounds: $0["rounds"], restarts: $0["restarts"], started: $0["started"], updated: $0["updated"])
            }
        }
    }

    /// Every run's row, newest first.
    public func runs() throws(TernError) -> [FLRunInfo] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT run, status, rounds, restarts, started, updated FROM fl_runs ORDER BY updated DESC").map {
                FLRunInfo(run: $0["run"], status: $0["status"], rounds: $0["rounds"], restarts: $0["restarts"], started: $0["started"], updated: $0["updated"])
            }
        }
    }

    func records(_ db: Database, run: String) throws -> [FLRoundRecord] {
        try String.fetchAll(db, sql: "SELECT record FROM fl_rounds WHERE run = ? ORDER BY round", arguments: [run]).map {
            try FLJSON.decoder.decode(FLRoundRecord.self, from: Data($0.utf8))
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws(TernError) -> T {
        do {
            return try database.write(body)
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("federated-learning database: \(error)")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws(TernError) -> T {
        do {
            return try database.read(body)
        } catch let error as TernError {
            throw error
        } catch {
            throw .internalError("federated-learning database: \(error)")
        }
    }
}

/// JSON for the run's records: sorted keys, and infinities and NaN (a diverged client's loss, the
/// ε of a run without noise) written as the strings "inf", "-inf" and "nan" instead of failing.
public enum FLJSON {
    /// An encoder of records (`pretty` for people).
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// The decoder that reads what `encoder` wrote.
    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}


/// One run as the store knows it.
public struct FLRunInfo: Sendable, Codable, Equatable {
    /// Its name.
    public var run: String
    /// running, interrupted or finished.
    public var status: String
    /// The rounds it was started for.
    public var rounds: Int
    /// How many times it was resumed.
    public var restarts: Int
    /// When it first started (Unix seconds).
    public var started: Double
    /// When it last changed (Unix seconds).
    public var updated: Double
}
