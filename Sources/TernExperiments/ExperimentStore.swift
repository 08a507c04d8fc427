import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Experiment metrics in SQLite (GRDB, WAL): routed requests, feedback labels, experiment
/// definitions and state, and events. Writes come in batches from `ExperimentRecorder`, off the
/// request path; a committed batch survives a crash of the process.
public final class ExperimentStore: Sendable {
    /// A pool on a file (WAL: reports read a snapshot while the writer goes on committing, so a
    /// long report never holds records back); a queue in memory (tests).
    let database: any DatabaseWriter
    /// Finds the records of a request id for feedback (see `RequestKeyIndex`). Read and changed
    /// only inside the database queue, so that it always agrees with what is committed.
    let keys: Mutex<RequestKeyIndex>
    /// Labels received lately, by key: records written after their label (a shadow's copy runs
    /// later than the served answer) get it as they are inserted.
    let recentLabels = Mutex(RecentLabels(capacity: 65_536))

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
        let migrator = ExperimentStore.makeMigrator()
        try migrator.migrate(database)
        var index = try database.read { db in try RequestKeyIndex.load(db, segmentRows: max(segmentRows, 1)) }
        // A tail longer than a segment (records written before this schema) is sealed now.
        while index.tail.count >= index.segmentRows {
            let sealed = try database.write { db in try index.sealOne(db) }
            index.tail.removeFirst(sealed)
        }
        keys = Mutex(index)
    }
}
