import Foundation
import GRDB
import Logging
import Synchronization
import Testing
import TernTesting
import TernCore
@testable import TernExperiments

@Suite struct HashingTests {
    @Test func murmur3MatchesPublishedVectors() {
        // Vectors from the reference implementation (checked with Python's mmh3).
        #expect(SubjectHash.murmur3([], seed: 0) == 0)
        #expect(SubjectHash.murmur3([], seed: 1) == 0x514E_28B7)
        #expect(SubjectHash.murmur3([], seed: 0xFFFF_FFFF) == 0x81F1_6F39)
        #expect(SubjectHash.murmur3([0, 0, 0, 0], seed: 0) == 0x2362_F9DE)
        #expect(SubjectHash.murmur3(Array("hello".utf8), seed: 0) == 0x248B_FA47)
        #expect(SubjectHash.murmur3(Array("Hello, world!".utf8), seed: 1234) == 0xFAF6_CDB3)
        #expect(SubjectHash.murmur3(Array("The quick brown fox jumps over the lazy dog".utf8), seed: 0x9747_B28C) == 0x2FA8_26CD)
        #expect(SubjectHash.murmur3.hash("digits_ab:user-42") == 0xEC54_A974)
        // The request path hashes "salt:key" without building the text: same value, every tail length.
        for key in ["", "u", "us", "use", "user", "user-42", "ünïcode-キー"] {
            for hash in SubjectHash.allCases {
                #expect(hash.hash(prefix: "digits_ab", key: key) == hash.hash("digits_ab:" + key))
            }
        }
    }

    @Test func fnv1aMatchesPublishedVectors() {
        #expect(SubjectHash.fnv1a([]) == 0x811C_9DC5)
        #expect(SubjectHash.fnv1a(Array("a".utf8)) == 0xE40C_292C)
        #expect(SubjectHash.fnv1a(Array("foobar".utf8)) == 0xBF9C_F968)
        // The 64-bit variant that keys request ids in the metrics store.
        func fnv64(_ text: String) -> UInt64 { Array(text.utf8).withUnsafeBytes { SubjectHash.fnv1a64($0) } }
        #expect(fnv64("") == 0xCBF2_9CE4_8422_2325)
        #expect(fnv64("a") == 0xAF63_DC4C_8601_EC8C)
        #expect(fnv64("foobar") == 0x8594_4171_F739_67E8)
    }

    @Test func assignmentIsStableAndSplitsByWeight() {
        let assigner = Assigner(hash: .murmur3, salt: "exp", weights: [70, 30])
        var counts = [0, 0]
        for i in 0..<20_000 {
            let key = "subject-\(i)"
            let variant = assigner.variant(for: key)
            #expect(assigner.variant(for: key) == variant)
            counts[variant] += 1
        }
        #expect(abs(Double(counts[0]) / 20_000 - 0.7) < 0.015)
        // The documented formula: bucket = murmur3("salt:key") mod 10 000.
        #expect(assigner.bucket("user-42") == SubjectHash.murmur3.hash("exp:user-42") % 10_000)
    }

    @Test func changingWeightsMovesTheFewestSubjects() {
        let before = Assigner(hash: .fnv1a, salt: "s", weights: [50, 50])
        let after = Assigner(hash: .fnv1a, salt: "s", weights: [60, 40])
        var moved = 0, backwards = 0
        for i in 0..<20_000 {
            let (a, b) = (before.variant(for: "k\(i)"), after.variant(for: "k\(i)"))
            if a != b { moved += 1 }
            if a == 0 && b == 1 { backwards += 1 }
        }
        // Exactly the 10 % of buckets that changed owner move, all towards the grown variant.
        #expect(abs(Double(moved) / 20_000 - 0.10) < 0.01)
        #expect(backwards == 0)
    }
}

@Suite struct StatisticsTests {
    // Expected values from scipy 1.17 on the same data.
    @Test func mannWhitneyMatchesScipy() throws {
        let x = [1.2, 3.4, 2.2, 5.0, 4.1, 3.3, 2.9, 6.1, 4.4, 3.3]
        let y = [2.1, 2.2, 1.9, 3.0, 2.8, 1.5, 2.2, 3.3, 2.0, 2.6, 1.1]
        let result = try #require(Statistics.mannWhitney(x, y))
        #expect(result.u == 92)
        #expect(abs(result.p - 0.00996750157937166) < 1e-12)
        #expect(result.probabilityOfSuperiority > 0.5)
    }

    @Test func proportionsChiSquareAndIntervalsMatchScipy() throws {
        let test = try #require(Statistics.twoProportions(successes1: 30, trials1: 100, successes2: 45, trials2: 100))
        #expect(abs(test.z * test.z - 4.8) < 1e-9)  // = the 2x2 chi-square without correction
        #expect(abs(test.p - 0.028459736916310638) < 1e-12)
        let srm = try #require(Statistics.chiSquareFit(observed: [520, 480], weights: [50, 50]))
        #expect(abs(srm.statistic - 1.6) < 1e-12 && abs(srm.p - 0.20590321073206466) < 1e-12)
        let three = try #require(Statistics.chiSquareFit(observed: [310, 350, 340], weights: [33, 33, 34]))
        #expect(abs(three.statistic - 2.4242424242424243) < 1e-9 && abs(three.p - 0.2975654101475654) < 1e-9)
        #expect(abs(Statistics.chiSquareSurvival(7.5, degrees: 3) - 0.0575584519726364) < 1e-12)
        #expect(abs(Statistics.chiSquareSurvival(0.3, degrees: 1) - 0.583882420770365) < 1e-12)
        #expect(abs(Statistics.chiSquareSurvival(50, degrees: 10) / 2.669083424904495e-07 - 1) < 1e-9)
        let wilson = try #require(Statistics.wilson(successes: 87, trials: 100))
        #expect(abs(wilson.low - 0.7901964855992357) < 1e-12 && abs(wilson.high - 0.9224283257275948) < 1e-12)
        let sorted = [1.0, 2, 3, 4, 5, 7, 9]
        #expect(Statistics.quantile(sorted, 0.5) == 4)
        #expect(abs(Statistics.quantile(sorted, 0.95)! - 8.4) < 1e-12 && abs(Statistics.quantile(sorted, 0.99)! - 8.88) < 1e-12)
    }
}

@Suite struct SpecTests {
    @Test func parsesYAMLWithDefaultsAndRejectsMistakes() throws {
        let spec = try ExperimentSpec.parse(
            """
            routing_key: header:X-Device-Id
            hash: fnv1a
            variants:
              - { name: control, model: digits_mlp, weight: 80 }
              - { name: candidate, model: digits_weak, version: 1, weight: 20 }
              - { name: next, model: digits_logreg, shadow: true }
            guardrails: { alpha: 0.05, min_samples: 50 }
            canary: { step_weight: 5, max_weight: 30, interval_s: 10, threshold: 2 }
            """, defaultName: "digits_ab")
        #expect(spec.name == "digits_ab" && spec.routingKey == .header("x-device-id") && spec.hash == .fnv1a)
        #expect(spec.control.name == "control" && spec.shadows.map(\.name) == ["next"] && spec.variants[1].version == 1)
        #expect(spec.guardrails?.alpha == 0.05 && spec.guardrails?.minSamples == 50 && spec.guardrails?.maxAccuracyDrop == 0.02)
        #expect(spec.canary == CanarySpec(stepWeight: 5, maxWeight: 30, intervalSeconds: 10, threshold: 2))
        // The JSON encoding reads back to the same experiment (the store keeps it so).
        let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        #expect(try ExperimentSpec.parse(json) == spec)

        for (text, fragment) in [
            ("name: x\nvariants: [ { name: a, model: m, weight: 1 } ]", "two or more variants"),
            ("name: x\nvariants: [ { name: a, model: m, weight: 1 }, { name: a, model: n, weight: 1 } ]", "must differ"),
            ("name: x\nvariants: [ { name: a, model: m, weight: -1 }, { name: b, model: n, weight: 1 } ]", "weight"),
            ("name: x\nrouting_key: cookie\nvariants: [ { name: a, model: m, weight: 1 }, { name: b, model: n, weight: 1 } ]", "routing_key"),
            ("name: x\nvariants: [ { name: a, weight: 1 } ]", "model"),
            ("name: 'bad name'\nvariants: [ { name: a, model: m, weight: 1 }, { name: b, model: n, weight: 1 } ]", "name"),
            ("variants: : :", "YAML"),
            ("name: feedback\nvariants: [ { name: a, model: m, weight: 1 }, { name: b, model: n, weight: 1 } ]", "feedback"),
        ] {
            #expect(throws: TernError.self) { try ExperimentSpec.parse(text) }
            do {
                _ = try ExperimentSpec.parse(text)
            } catch {
                #expect(error.message.contains(fragment), "\(error.message)")
            }
        }
    }
}

@Suite struct ReportTests {
    func data(requests: Int, errors: Int, latency: Double, labelled: Int, correct: Int) -> VariantData {
        var d = VariantData()
        d.requests = requests
        d.errors = errors
        d.latenciesMs = (0..<(requests - errors)).map { latency + Double($0 % 10) * 0.1 }
        d.labelled = labelled
        d.correct = correct
        return d
    }

    @Test func guardrailFlagsAWorseVariantAndHoldsEqualOnes() throws {
        let spec = try ExperimentSpec.parse(
            "name: e\nvariants: [ { name: a, model: m, weight: 50 }, { name: b, model: n, weight: 50 } ]\nguardrails: { min_samples: 100, min_labels: 50 }")
        let state = ExperimentState(spec: spec, now: 0)
        let worse = ExperimentReport.make(
            spec: spec, state: state, data: ["a": data(requests: 500, errors: 0, latency: 1, labelled: 400, correct: 388),
                                             "b": data(requests: 500, errors: 0, latency: 1, labelled: 400, correct: 164)],
            sampleRatioData: [:], events: [])
        #expect(worse.verdict.outcome == .failing)
        #expect(worse.verdict.reasons.first?.contains("accuracy") == true)
        let b = try #require(worse.variants.first { $0.name == "b" })
        #expect(abs(b.accuracy! - 0.41) < 1e-9 && b.accuracyCI95![0] < 0.41 && b.accuracyCI95![1] > 0.41)
        let same = ExperimentReport.make(
            spec: spec, state: state, data: ["a": data(requests: 500, errors: 2, latency: 1, labelled: 400, correct: 388),
                                             "b": data(requests: 500, errors: 3, latency: 1, labelled: 400, correct: 385)],
            sampleRatioData: ["a": data(requests: 500, errors: 0, latency: 1, labelled: 0, correct: 0),
                              "b": data(requests: 500, errors: 0, latency: 1, labelled: 0, correct: 0)], events: [])
        #expect(same.verdict.outcome == .holding)
        #expect(same.sampleRatio?.mismatch == false)
        // A variant three times slower, with a p99 ratio above max_latency_ratio, fails the latency guardrail.
        let latencySpec = try ExperimentSpec.parse(
            "name: e\nvariants: [ { name: a, model: m, weight: 50 }, { name: b, model: n, weight: 50 } ]\nguardrails: { min_samples: 100, max_latency_ratio: 1.5 }")
        let slower = ExperimentReport.make(
            spec: latencySpec, state: ExperimentState(spec: latencySpec, now: 0),
            data: ["a": data(requests: 300, errors: 0, latency: 1, labelled: 0, correct: 0),
                   "b": data(requests: 300, errors: 0, latency: 3, labelled: 0, correct: 0)], sampleRatioData: [:], events: [])
        #expect(slower.verdict.outcome == .failing && slower.verdict.reasons.first?.contains("slower") == true)
        let few = ExperimentReport.make(
            spec: spec, state: state, data: ["a": data(requests: 20, errors: 0, latency: 1, labelled: 0, correct: 0)], sampleRatioData: [:], events: [])
        #expect(few.verdict.outcome == .insufficientData)
        // The HTML page shows every variant in its table and both charts.
        let html = ReportHTML.render(worse)
        #expect(html.contains("id=\"latency-chart\"") && html.contains("id=\"accuracy-chart\""))
        #expect(html.components(separatedBy: "<tr class=\"variant\">").count == 3)
    }
}

@Suite struct StoreTests {
    @Test func recordsFeedbackAndRetention() throws {
        let store = try ExperimentStore(path: nil)
        let recorder = ExperimentRecorder(store: store, capacity: 4 * ExperimentRecorder.shardCount, flushInterval: .seconds(60), logger: Logger(label: "test"))
        defer { recorder.shutdown() }
        for i in 0..<6 {
            recorder.record(ExperimentRecord(
                time: Double(i), experiment: "e", variant: i % 2 == 0 ? "a" : "b", requestID: "r\(i)", latencyUs: 1000 + Int64(i),
                confidence: 0.9, prediction: "\(i % 3)"))
        }
        // A full buffer drops and counts; it never blocks.
        #expect(recorder.droppedRecords == 2)
        recorder.flush()
        #expect(try store.requestCount(experiment: "e") == 4)
        #expect(try store.addFeedback([("r0", "0"), ("r1", "2"), ("r2", "2"), ("nope", "1")]) == 3)
        let data = try store.variantData(experiment: "e")
        #expect(data["a"]?.requests == 2 && data["a"]?.labelled == 2 && data["a"]?.correct == 2)
        #expect(data["b"]?.labelled == 1 && data["b"]?.correct == 0)
        #expect(data["a"]?.latenciesMs.sorted() == [1.0, 1.002])
        #expect(try store.variantData(experiment: "e", latencyWindow: 1)["a"]?.latenciesMs == [1.002])  // the newest only
        try store.enforceRetention(experiment: "e", maxRows: 2, maxDays: nil)
        #expect(try store.requestCount(experiment: "e") == 2)
        try store.enforceRetention(experiment: "e", maxRows: nil, maxDays: 1, now: 86_400 + 2.5)
        #expect(try store.requestCount(experiment: "e") == 1)
    }

    @Test func integerPredictionsAreStoredAsTheirTextAndMatchLabels() throws {
        let store = try ExperimentStore(path: nil)
        var records: [ExperimentRecord] = []
        for i in 0..<4 {
            var record = ExperimentRecord(time: Double(i), experiment: "e", variant: "a", requestID: "r\(i)", latencyUs: 1000)
            record.predictedInteger = Int64(i)
            records.append(record)
        }
        try store.insert(records)
        #expect(try store.addFeedback([("r0", "0"), ("r1", "1"), ("r2", "3"), ("r3", "-3")]) == 4)
        #expect(try store.labelledCounts(experiment: "e")["a"]! == (4, 2))
        let texts = try store.database.read { db in try String.fetchAll(db, sql: "SELECT prediction FROM ab_requests ORDER BY id") }
        #expect(texts == ["0", "1", "2", "3"])
        // Labels whose requests are gone go too.
        try store.enforceRetention(experiment: "e", maxRows: 1, maxDays: nil)
        #expect(try store.database.read { db in
            try String.fetchAll(db, sql: "SELECT r.request_id FROM ab_labels l JOIN ab_requests r ON r.id = l.row")
        } == ["r3"])
        #expect(try store.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ab_labels") } == 1)
    }
}

extension StoreTests {
    @Test func textsAreStoredExactlyEmptyIsNotNull() throws {
        let store = try ExperimentStore(path: nil)
        var records = [
            ExperimentRecord(time: 1, experiment: "é-experiment", variant: "", requestID: "ü/1", subject: "", latencyUs: 5, prediction: "a,b", error: nil),
            ExperimentRecord(time: 2, experiment: "é-experiment", variant: "b", requestID: String(repeating: "x", count: 300), subject: nil, latencyUs: 6,
                             prediction: nil, error: "model 'm' failed: \"boom\""),
        ]
        records[1].predictedInteger = -7
        try store.insert(records)
        let rows = try store.database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM ab_requests ORDER BY id") }
        #expect(rows.count == 2)
        #expect(rows[0]["experiment"] as String? == "é-experiment" && rows[0]["variant"] as String? == "")
        #expect(rows[0]["request_id"] as String? == "ü/1" && rows[0]["subject"] as String? == "" && rows[0]["prediction"] as String? == "a,b")
        #expect(rows[0]["error"] as String? == nil)
        #expect(rows[1]["request_id"] as String? == String(repeating: "x", count: 300) && rows[1]["subject"] as String? == nil)
        #expect(rows[1]["prediction"] as String? == "-7" && rows[1]["error"] as String? == "model 'm' failed: \"boom\"")
    }

    /// Several statements of 32 rows and one of the rest: every record lands once, in order.
    @Test func batchesBeyondOneStatementKeepEveryRecord() throws {
        let store = try ExperimentStore(path: nil)
        let count = ExperimentStore.rowsPerStatement * 2 + 7
        let records = (0..<count).map { i in
            var record = ExperimentRecord(
                time: Double(i), experiment: "e", variant: i % 3 == 0 ? "a" : "b", requestID: "r\(i)", subject: i % 2 == 0 ? "s\(i)" : nil,
                latencyUs: Int64(i), confidence: i % 5 == 0 ? nil : Double(i) / 100, prediction: i % 4 == 0 ? "p\(i)" : nil,
                error: i % 7 == 0 ? "e\(i)" : nil, shadow: i % 11 == 0)
            if i % 4 == 1 { record.predictedInteger = Int64(i) }
            return record
        }
        try store.insert(records)
        let rows = try store.database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM ab_requests ORDER BY id") }
        #expect(rows.count == count)
        for (i, row) in rows.enumerated() {
            let r = records[i]
            #expect(row["time"] as Double == r.time && row["request_id"] as String == r.requestID && row["variant"] as String == r.variant)
            #expect(row["subject"] as String? == r.subject && row["latency_us"] as Int64 == r.latencyUs && row["confidence"] as Double? == r.confidence)
            #expect(row["prediction"] as String? == (r.predictedInteger.map(String.init) ?? r.prediction))
            #expect(row["error"] as String? == r.error && row["shadow"] as Bool == r.shadow)
        }
    }

    /// A database written by the first schema (AUTOINCREMENT ids) keeps its records and their
    /// ids, and goes on numbering after them.
    @Test func migratesTheFirstSchemaKeepingRecords() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ab.sqlite").path
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            let old = try DatabaseQueue(path: path)
            try old.write { db in
                try db.execute(sql: """
                    CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                    INSERT INTO grdb_migrations VALUES ('experiments_v1');
                    CREATE TABLE ab_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, time DOUBLE NOT NULL, experiment TEXT NOT NULL,
                        variant TEXT NOT NULL, request_id TEXT NOT NULL, subject TEXT, latency_us INTEGER NOT NULL, confidence DOUBLE,
                        prediction TEXT, error TEXT, shadow BOOLEAN NOT NULL);
                    CREATE INDEX ab_requests_by_request ON ab_requests(request_id);
                    CREATE TABLE ab_feedback (request_id TEXT PRIMARY KEY NOT NULL, label TEXT NOT NULL, time DOUBLE NOT NULL);
                    CREATE TABLE ab_experiments (name TEXT PRIMARY KEY NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, source TEXT NOT NULL,
                        created DOUBLE NOT NULL, updated DOUBLE NOT NULL);
                    CREATE TABLE ab_events (id INTEGER PRIMARY KEY AUTOINCREMENT, time DOUBLE NOT NULL, experiment TEXT NOT NULL, kind TEXT NOT NULL,
                        detail TEXT NOT NULL);
                    INSERT INTO ab_requests (id, time, experiment, variant, request_id, latency_us, prediction, shadow) VALUES
                        (7, 1, 'e', 'a', 'r7', 100, '1', 0), (9, 2, 'e', 'b', 'r9', 200, '2', 0);
                    INSERT INTO ab_feedback VALUES ('r9', '2', 3);
                    """)
            }
        }
        let store = try ExperimentStore(path: path)
        try store.insert([ExperimentRecord(time: 3, experiment: "e", variant: "a", requestID: "r10", latencyUs: 300)])
        let (ids, schema) = try store.database.read { db in
            (try Int64.fetchAll(db, sql: "SELECT id FROM ab_requests ORDER BY id"),
             try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'ab_requests'") ?? "")
        }
        #expect(ids == [7, 9, 10])
        #expect(!schema.uppercased().contains("AUTOINCREMENT"))
        // The old label moved to its record; the per-insert index went; old ids are still found.
        #expect(try store.labelledCounts(experiment: "e")["b"]! == (1, 1))
        let names = try store.database.read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master") }
        #expect(!names.contains("ab_requests_by_request") && !names.contains("ab_feedback") && names.contains("ab_labels"))
        #expect(try store.addFeedback([("r7", "1"), ("r10", "0")]) == 2)
        #expect(try store.labelledCounts(experiment: "e")["a"]! == (2, 1))
    }

    /// A record written after its label arrived (a shadow's copy runs later than the served
    /// answer) gets the label as it is inserted; a newer label for the id replaces the older.
    @Test func recordsWrittenAfterTheirLabelGetIt() throws {
        let store = try ExperimentStore(path: nil)
        var served = ExperimentRecord(time: 1, experiment: "e", variant: "live", requestID: "r1", latencyUs: 1)
        served.predictedInteger = 3
        try store.insert([served])
        #expect(try store.addFeedback([("r1", "3"), ("later", "5")]) == 1)
        var shadow = ExperimentRecord(time: 1, experiment: "e", variant: "next", requestID: "r1", latencyUs: 1, shadow: true)
        shadow.predictedInteger = 4
        var other = ExperimentRecord(time: 2, experiment: "e", variant: "live", requestID: "later", latencyUs: 1)
        other.predictedInteger = 5
        try store.insert([shadow, ExperimentRecord(time: 2, experiment: "e", variant: "live", requestID: "unlabelled", latencyUs: 1), other])
        var counts = try store.labelledCounts(experiment: "e")
        #expect(counts["live"]! == (2, 2) && counts["next"]! == (1, 0))
        #expect(try store.addFeedback([("r1", "4")]) == 1)
        counts = try store.labelledCounts(experiment: "e")
        #expect(counts["live"]! == (2, 1) && counts["next"]! == (1, 1))
    }

    @Test func recentLabelsForgetTheOldestFirst() {
        var recent = RecentLabels(capacity: 3)
        #expect(recent.isEmpty)
        for (i, id) in ["a", "b", "c"].enumerated() { recent.add(key: Int64(i), requestID: id, label: "x", time: 0) }
        recent.add(key: 0, requestID: "a", label: "y", time: 1)  // an update takes no new place
        #expect(recent.labels(forKey: 0)?.map(\.label) == ["y"])
        recent.add(key: 1, requestID: "b2", label: "z", time: 2)  // a second id with key 1; "a" goes
        #expect(recent.labels(forKey: 0) == nil && recent.labels(forKey: 1)?.map(\.requestID) == ["b", "b2"])
        recent.add(key: 9, requestID: "d", label: "w", time: 3)  // then "b"
        #expect(recent.labels(forKey: 1)?.map(\.requestID) == ["b2"] && recent.labels(forKey: 9) != nil)
    }

    /// Ids are found in sealed segments (across chunk boundaries, with runs of one id) and in the
    /// tail, after a reopen too; retention drops segments whose records are gone.
    @Test func feedbackFindsRecordsInSegmentsAndTheTail() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ab.sqlite").path
        let segmentRows = 300  // three chunks of up to 128 keys per segment
        var ids: [String] = []
        do {
            let store = try ExperimentStore(path: path, segmentRows: segmentRows)
            var records: [ExperimentRecord] = []
            for i in 0..<1000 {
                // Client-style random ids, a few reused ids (one of them 200 times), and a shadow
                // copy sharing its served request's id.
                let id = i % 5 == 0 ? "same" : i % 7 == 0 ? "seven-\(i % 3)" : UUID().uuidString
                ids.append(id)
                var record = ExperimentRecord(time: Double(i), experiment: "e", variant: i % 2 == 0 ? "a" : "b", requestID: id, latencyUs: 10)
                record.predictedInteger = Int64(i % 10)
                records.append(record)
                if i == 999 { records.append(ExperimentRecord(time: Double(i), experiment: "e", variant: "s", requestID: id, latencyUs: 10, shadow: true)) }
            }
            // In uneven batches, so that segments fill across them.
            var start = 0
            for size in [1, 250, 333, 17, 400] {
                try store.insert(Array(records[start..<min(start + size, records.count)]))
                start += size
            }
            let segments = try store.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ab_request_segments") }
            #expect(segments == 3)  // 1001 records: three sealed, 101 in the tail
            #expect(try store.addFeedback([(ids[1], "1"), (ids[3], "3"), (ids[998], "8"), (ids[999], "9"), ("unknown", "0")]) == 4)
            #expect(try store.labelledCounts(experiment: "e").mapValues { $0.labelled } == ["a": 1, "b": 3, "s": 1])
        }
        let store = try ExperimentStore(path: path, segmentRows: segmentRows)
        // After a reopen: the tail is read back; "same" (every fifth record: 100 predicted 0 on
        // "a", 100 predicted 5 on "b") runs across chunks of every segment and the tail.
        #expect(try store.addFeedback([("same", "0"), (ids[997], "7")]) == 2)
        let counts = try store.labelledCounts(experiment: "e")
        #expect(counts["a"]! == (101, 101) && counts["b"]! == (104, 4))
        try store.enforceRetention(experiment: "e", maxRows: 500, maxDays: nil)
        let left = try store.database.read { db in try Int64.fetchAll(db, sql: "SELECT first_row FROM ab_request_segments ORDER BY segment") }
        #expect(left == [301, 601])  // the first segment's records are all gone
        #expect(try store.addFeedback([(ids[1], "1"), (ids[701], "0")]) == 1)
        // Emptied, the table numbers from 1 again: no old key may point at the new records.
        try store.enforceRetention(experiment: "e", maxRows: 0, maxDays: nil)
        #expect(try store.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ab_request_keys") } == 0)
        try store.insert([ExperimentRecord(time: 1, experiment: "e", variant: "a", requestID: "new", latencyUs: 1)])
        #expect(try store.database.read { db in try Int64.fetchOne(db, sql: "SELECT id FROM ab_requests") } == 1)
        #expect(try store.addFeedback([(ids[1], "1"), ("same", "0"), ("new", "0")]) == 1)
    }
}

@Suite struct RequestIDTests {
    @Test func generatedIdsAreSmallFixedWidthAndIncreasing() {
        let counters: [UInt64] = [0, 1, 2, 63, 64, 65, 4095, 4096, 1 << 40, (1 << 48) - 1]
        let ids = counters.map { RequestIDs.format($0) }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        #expect(Set(ids.map(\.utf8.count)) == [RequestIDs.length] && RequestIDs.length <= 15)  // a small string
        #expect(Set(ids.map { $0.prefix(7) }).count == 1)  // the process's prefix
        #expect(ids[0].hasSuffix("........") && ids[1].hasSuffix(".......0") && ids[3].hasSuffix(".......z") && ids[4].hasSuffix("......0."))
        let digits = Set(".0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz".utf8)
        #expect(ids.allSatisfy { $0.utf8.allSatisfy(digits.contains) })
        #expect(RequestIDs.next() != RequestIDs.next())
    }
}

@Suite struct OutputReadingTests {
    @Test func confidenceIsTheRowMaximumAndPredictionTheLabelOrArgmax() throws {
        let probabilities = Tensor(name: "probabilities", dataType: .fp32, shape: [2, 3], data: [Float(0.1), 0.7, 0.2, 0.5, 0.2, 0.3].withUnsafeBytes { Data($0) })
        let labels = Tensor(name: "label", dataType: .int64, shape: [2], data: [Int64(1), 0].withUnsafeBytes { Data($0) })
        let both = InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: [labels, probabilities])
        let (confidence, prediction) = OutputReading.read(both, confidenceOutput: nil, predictionOutput: nil)
        #expect(abs(try #require(confidence) - 0.6) < 1e-6)
        #expect(prediction == .text("1,0"))
        let scoresOnly = InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: [probabilities])
        #expect(OutputReading.read(scoresOnly, confidenceOutput: "probabilities", predictionOutput: nil).1 == .text("1,0"))
        // One row: the prediction is an integer, no text made on the request path.
        let oneRow = Tensor(name: "probabilities", dataType: .fp32, shape: [1, 3], data: [Float(0.1), 0.2, 0.7].withUnsafeBytes { Data($0) })
        #expect(OutputReading.read(InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: [oneRow]), confidenceOutput: nil, predictionOutput: nil).1 == .integer(2))
        let oneLabel = Tensor(name: "label", dataType: .uint8, shape: [1], data: Data([7]))
        #expect(OutputReading.read(InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: [oneLabel, oneRow]), confidenceOutput: nil, predictionOutput: nil).1 == .integer(7))
        let huge = Tensor(name: "label", dataType: .uint64, shape: [1], data: [UInt64.max].withUnsafeBytes { Data($0) })
        #expect(OutputReading.read(InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: [huge]), confidenceOutput: nil, predictionOutput: nil).1 == .text(String(UInt64.max)))
        #expect(OutputReading.read(InferenceResponse(modelName: "m", modelVersion: 1, id: "x", outputs: []), confidenceOutput: nil, predictionOutput: nil) == (nil, nil))
    }
}

/// Shadow copies run on their own thread, which a steady stream of copies does not have to wake
/// (no wake-up on the served request's path), and which sleeps — woken by the next copy — once
/// idle.
@Suite struct ShadowRunnerTests {
    @Test func aSteadyStreamRunsWithoutWakeUpsAndAnIdleThreadIsWokenOnce() async throws {
        let engine = try await TestEnvironment.startedServer(repository: try TestEnvironment.repository(with: ["add_sub"]))
        let runner = ShadowRunner(engine: engine, pollInterval: .milliseconds(1), idleAfter: .milliseconds(100))
        runner.start()
        defer { runner.stop() }
        let a = Tensor(name: "INPUT0", shape: [1, 16], values: [Float](repeating: 1, count: 16))
        var b = a
        b.name = "INPUT1"
        let request = InferenceRequest(modelName: "add_sub", inputs: [a, b])
        let finished = Atomic(0), failed = Atomic(0)
        func send(_ count: Int, spacing: Duration) async throws {
            for _ in 0..<count {
                runner.submit(request) { result, _ in
                    if case .failure = result { failed.add(1, ordering: .relaxed) }
                    finished.add(1, ordering: .relaxed)
                }
                try await Task.sleep(for: spacing)
            }
        }
        func waitFor(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while finished.load(ordering: .relaxed) < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(2)) }
            #expect(finished.load(ordering: .relaxed) == count)
        }
        try await Task.sleep(for: .milliseconds(300))  // idle: the thread sleeps
        try await send(200, spacing: .microseconds(500))
        try await waitFor(200)
        // The first copy woke it (unless a busy machine kept the thread from falling asleep in
        // the 300 ms); the rest were picked up by its own polling (a scheduler hiccup past 100 ms
        // may cost another wake-up; one per copy would be 200).
        let woken = runner.wakeUpCount
        #expect(woken <= 3)
        // Idle again: the thread falls asleep once it has run for idleAfter with nothing to do
        // (it runs at idle priority, so on a busy machine that can take longer than 100 ms).
        let deadline = ContinuousClock.now + .seconds(10)
        while !runner.isAsleep, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(runner.isAsleep)
        try await send(1, spacing: .zero)
        try await waitFor(201)
        #expect(runner.wakeUpCount == woken + 1)
        #expect(failed.load(ordering: .relaxed) == 0)
    }
}

@Suite struct RecorderTests {
    /// Threads recording at once (into different shards) lose nothing; the observer sees every
    /// record once, in runs of one experiment, after its batch is written.
    @Test func recordsFromManyThreadsLandOnceAndReachTheObserver() throws {
        let store = try ExperimentStore(path: nil)
        // Room for every record even if all threads share one shard.
        let recorder = ExperimentRecorder(store: store, capacity: 4000 * ExperimentRecorder.shardCount, flushInterval: .seconds(60), logger: Logger(label: "test"))
        defer { recorder.shutdown() }
        let seen = Mutex<[String: Int]>([:])
        recorder.observe { name, records in
            #expect(records.allSatisfy { $0.experiment == name })
            seen.withLock { $0[name, default: 0] += records.count }
        }
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for i in 0..<500 {
                recorder.record(ExperimentRecord(time: 1, experiment: i % 3 == 0 ? "x" : "y", variant: "a", requestID: "t\(thread)-\(i)", latencyUs: 1))
            }
        }
        recorder.flush()
        #expect(try store.requestCount() == 4000 && recorder.droppedRecords == 0)
        #expect(Set(try store.database.read { db in try String.fetchAll(db, sql: "SELECT request_id FROM ab_requests") }).count == 4000)
        #expect(seen.withLock { $0 } == ["x": 8 * 167, "y": 8 * 333])
    }

    /// Counts and guardrail tallies come from written records: a record taken before the weights
    /// changed does not count towards the sample-ratio check after the change.
    @Test func writtenRecordsFeedTheTallies() throws {
        let spec = try ExperimentSpec.parse("variants: [ { name: a, model: m, weight: 50 }, { name: b, model: m2, weight: 50 } ]", defaultName: "e")
        let store = try ExperimentStore(path: nil)
        let recorder = ExperimentRecorder(store: store, capacity: 100, flushInterval: .seconds(60), logger: Logger(label: "test"))
        defer { recorder.shutdown() }
        let experiment = Experiment(spec: spec, state: ExperimentState(spec: spec, now: 0), recorder: recorder, shadows: nil, logger: Logger(label: "test"))
        recorder.observe { _, records in experiment.absorb(records) }
        let before = Date().timeIntervalSince1970 - 10
        recorder.record(ExperimentRecord(time: before, experiment: "e", variant: "a", requestID: "1", latencyUs: 2000, confidence: 0.5))
        #expect(experiment.tallyData(labelled: [:]).all["a"]!.requests == 0)  // not written yet
        _ = experiment.update { $0.weights = ["a": 90, "b": 10] }
        recorder.record(ExperimentRecord(time: Date().timeIntervalSince1970 + 1, experiment: "e", variant: "b", requestID: "2", latencyUs: 3000, error: "boom"))
        recorder.record(ExperimentRecord(time: before, experiment: "e", variant: "gone", requestID: "3", latencyUs: 1))
        recorder.flush()
        let (all, recent) = experiment.tallyData(labelled: [:])
        #expect(all["a"]!.requests == 1 && all["a"]!.latenciesMs == [2.0] && all["a"]!.confidenceSum == 0.5)
        #expect(all["b"]!.requests == 1 && all["b"]!.errors == 1 && all["b"]!.latenciesMs.isEmpty)
        #expect(recent["a"]!.requests == 0 && recent["b"]!.requests == 1)
    }
}
