import Foundation
import GRDB

/// How the metrics store finds the records of a request id (for feedback) without an index
/// updated on every insert. An SQLite index on `request_id` costs little while ids arrive in
/// order (the generated ones), but a client's own ids (UUIDs, say) land on random pages of it:
/// each batch then dirtied about one index page per record, and the writer went from ~2 to
/// ~27 µs per record (`tern ab store-bench --random-ids`).
///
/// Instead, records are keyed by a 64-bit hash of their id, in sorted runs written once:
/// - the newest records (the *tail*, fewer than `segmentRows`) are held in memory as
///   (key, row) pairs in row order, and rebuilt from the table when the store opens;
/// - once the tail holds `segmentRows`, they are sorted and written as one *segment*: rows of
///   `chunkEntries` pairs in a blob each, keyed by (segment, first key) — one append, no page of
///   an older segment touched.
/// A lookup probes each segment once (its chunk whose first key is at or below the key, going
/// back while equal keys continue) and scans the tail; every candidate row is then checked
/// against the table's `request_id`, so hash collisions cost a probe, never a wrong match.
/// Retention deletes the segments whose rows are all gone.
struct RequestKeyIndex {
    struct Entry: Sendable, Equatable {
        var key: Int64
        var row: Int64
    }

    /// Records per segment; a lookup scans at most this many tail entries in memory.
    let segmentRows: Int
    /// Pairs per stored chunk (16 bytes each: a 2 KiB blob stays within one SQLite page).
    static let chunkEntries = 128

    /// Records after the last segment, in row order.
    var tail: [Entry] = []

    static func key(_ requestID: UnsafeRawBufferPointer) -> Int64 { Int64(bitPattern: SubjectHash.fnv1a64(requestID)) }

    static func key(_ requestID: String) -> Int64 {
        var text = requestID
        return text.withUTF8 { key(UnsafeRawBufferPointer($0)) }
    }

    static func createTables(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE ab_request_segments (segment INTEGER PRIMARY KEY, first_row INTEGER NOT NULL, last_row INTEGER NOT NULL);
            CREATE TABLE ab_request_keys (
                segment INTEGER NOT NULL, first_key INTEGER NOT NULL, chunk INTEGER NOT NULL, last_key INTEGER NOT NULL, entries BLOB NOT NULL,
                PRIMARY KEY (segment, first_key, chunk)) WITHOUT ROWID;
            """)
    }

    /// The state after opening: the tail, read from the table.
    static func load(_ db: Database, segmentRows: Int) throws -> RequestKeyIndex {
        var index = RequestKeyIndex(segmentRows: segmentRows)
        let sealed = try Int64.fetchOne(db, sql: "SELECT MAX(last_row) FROM ab_request_segments") ?? 0
        let rows = try Row.fetchCursor(db, sql: "SELECT id, request_id FROM ab_requests WHERE id > ? ORDER BY id", arguments: [sealed])
        while let row = try rows.next() {
            let id: Int64 = row[0]
            let key = try row.withUnsafeData(atIndex: 1) { data in
                (data ?? Data()).withUnsafeBytes { Self.key($0) }
            }
            index.tail.append(Entry(key: key, row: id))
        }
        return index
    }

    /// Writes the oldest `segmentRows` tail entries as a segment (in the caller's transaction)
    /// and returns how many tail entries it took (0 when the tail is not full).
    func sealOne(_ db: Database) throws -> Int {
        guard tail.count >= segmentRows else { return 0 }
        var entries = Array(tail.prefix(segmentRows))
        entries.sort { $0.key != $1.key ? $0.key < $1.key : $0.row < $1.row }
        let segment = (try Int64.fetchOne(db, sql: "SELECT MAX(segment) FROM ab_request_segments") ?? 0) + 1
        try db.execute(
            sql: "INSERT INTO ab_request_segments (segment, first_row, last_row) VALUES (?, ?, ?)",
            arguments: [segment, entries.lazy.map(\.row).min()!, entries.lazy.map(\.row).max()!])
        let statement = try db.makeStatement(sql: "INSERT INTO ab_request_keys (segment, first_key, chunk, last_key, entries) VALUES (?, ?, ?, ?, ?)")
        var chunk = 0
        var start = 0
        while start < entries.count {
            let part = entries[start..<min(start + Self.chunkEntries, entries.count)]
            var blob = Data(count: part.count * 16)
            blob.withUnsafeMutableBytes { out in
                for (n, entry) in part.enumerated() {
                    out.storeBytes(of: entry.key.littleEndian, toByteOffset: n * 16, as: Int64.self)
                    out.storeBytes(of: entry.row.littleEndian, toByteOffset: n * 16 + 8, as: Int64.self)
                }
            }
            try statement.execute(arguments: [segment, part.first!.key, chunk, part.last!.key, blob])
            chunk += 1
            start = part.endIndex
        }
        return segmentRows
    }

    /// The rows whose request id may be one of `keys` (by key), from the segments and the tail.
    func candidates(_ db: Database, keys: Set<Int64>) throws -> [Int64: [Int64]] {
        var found: [Int64: [Int64]] = [:]
        guard !keys.isEmpty else { return found }
        let segments = try Int64.fetchAll(db, sql: "SELECT segment FROM ab_request_segments ORDER BY segment")
        let statement = try db.makeStatement(
            sql: "SELECT first_key, last_key, entries FROM ab_request_keys WHERE segment = ? AND first_key <= ? ORDER BY first_key DESC, chunk DESC")
        for segment in segments {
            for key in keys {
                let chunks = try Row.fetchCursor(statement, arguments: [segment, key])
                while let chunk = try chunks.next() {
                    let (first, last): (Int64, Int64) = (chunk[0], chunk[1])
                    if last < key { break }
                    try chunk.withUnsafeData(atIndex: 2) { data in
                        guard let data else { return }
                        data.withUnsafeBytes { raw in
                            for offset in stride(from: 0, to: raw.count - 15, by: 16)
                            where Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int64.self)) == key {
                                found[key, default: []].append(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8, as: Int64.self)))
                            }
                        }
                    }
                    // Equal keys may continue in the chunk before only when this one starts with the key.
                    if first < key { break }
                }
            }
        }
        for entry in tail where keys.contains(entry.key) { found[entry.key, default: []].append(entry.row) }
        return found
    }

    /// Forgets the segments whose rows are all older than the oldest record left.
    static func dropSegments(_ db: Database, below oldestRow: Int64) throws {
        try db.execute(
            sql: "DELETE FROM ab_request_keys WHERE segment IN (SELECT segment FROM ab_request_segments WHERE last_row < ?)", arguments: [oldestRow])
        try db.execute(sql: "DELETE FROM ab_request_segments WHERE last_row < ?", arguments: [oldestRow])
    }
}
