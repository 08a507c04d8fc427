import Testing
import TernCore
@testable import TernRuntime

/// The adaptive batching controller as a pure function of the latencies it observes.
@Suite struct AdaptiveBatchingTests {
    typealias C = AdaptiveBatchController
    static let settings = C.Settings(targetNs: 10_000_000, minBatch: 1, maxBatch: 32, maxDelayNs: 2_000_000)

    static func window(p95Ms: Double, batch: Double, executionMs: Double = 1) -> C.Window {
        C.Window(p95Ns: UInt64(p95Ms * 1_000_000), meanBatch: batch, meanExecutionNs: UInt64(executionMs * 1_000_000), requests: 64)
    }

    @Test func growsWhileBatchesFillEvenWhenQueueingPushesLatencyOverTheTarget() {
        var c = C(settings: Self.settings)
        #expect(c.batchLimit == 1 && c.delayNs == 0)
        var limits: [Int] = []
        for _ in 0..<12 {
            // Overloaded at the current limit: full batches, p95 far above the 10 ms target.
            c.observe(Self.window(p95Ms: 200, batch: Double(c.batchLimit)))
            limits.append(c.batchLimit)
        }
        #expect(limits == [2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22])
        for _ in 0..<20 { c.observe(Self.window(p95Ms: 200, batch: Double(c.batchLimit))) }
        #expect(c.batchLimit == 32)  // capped by the settings
    }

    @Test func shrinksWhenOneExecutionTakesMoreThanHalfTheBudget() {
        var c = C(settings: Self.settings)
        for _ in 0..<20 { c.observe(Self.window(p95Ms: 5, batch: Double(c.batchLimit))) }
        #expect(c.batchLimit == 32)
        c.observe(Self.window(p95Ms: 14, batch: 32, executionMs: 6))
        #expect(c.batchLimit == 24)
        c.observe(Self.window(p95Ms: 12, batch: 24, executionMs: 5.5))
        #expect(c.batchLimit == 18)
        for _ in 0..<20 { c.observe(Self.window(p95Ms: 50, batch: 1, executionMs: 40)) }
        #expect(c.batchLimit == 1 && c.delayNs == 0)  // never below the minimum
    }

    @Test func underLightLoadTheDelayTracksTheTargetWithADeadBand() {
        var c = C(settings: Self.settings)
        for _ in 0..<3 { c.observe(Self.window(p95Ms: 2, batch: Double(c.batchLimit))) }
        let limit = c.batchLimit
        // Batches do not fill: the limit stays, the delay grows while p95 is under 8 ms ...
        for _ in 0..<30 { c.observe(Self.window(p95Ms: 2, batch: 1)) }
        #expect(c.batchLimit == limit && c.delayNs == 2_000_000)  // capped at max_queue_delay
        // ... halves above 10 ms ...
        c.observe(Self.window(p95Ms: 11, batch: 1))
        #expect(c.delayNs == 1_000_000)
        // ... and holds in between, so it does not flap.
        let first = c.observe(Self.window(p95Ms: 9, batch: 1))
        let second = c.observe(Self.window(p95Ms: 8.5, batch: 1))
        #expect(!first && !second && c.delayNs == 1_000_000)
    }

    @Test func p95OfAWindow() {
        #expect(C.p95([]) == 0)
        #expect(C.p95(Array(1...100).map(UInt64.init)) == 95)
        #expect(C.p95([7]) == 7)
    }

    @Test func settingsComeFromParametersAndNeedDynamicBatching() throws {
        let config = try ModelConfig.parse(text: """
            name: "m"
            max_batch_size: 16
            dynamic_batching { max_queue_delay_microseconds: 500 }
            parameters { key: "tern.adaptive_batching.target_latency_ms" value: { string_value: "25" } }
            parameters { key: "tern.adaptive_batching.max_batch_size" value: { string_value: "64" } }
            parameters { key: "tern.adaptive_batching.min_batch_size" value: { string_value: "2" } }
            """)
        let settings = try #require(try C.Settings(config: config))
        #expect(settings.targetNs == 25_000_000 && settings.maxBatch == 16 && settings.minBatch == 2 && settings.maxDelayNs == 2_000_000)
        #expect(try C.Settings(config: ModelConfig.parse(text: "name: \"m\"\nmax_batch_size: 4")) == nil)
        #expect(throws: TernError.self) {
            try C.Settings(config: ModelConfig.parse(text: """
                name: "m"
                max_batch_size: 4
                parameters { key: "tern.adaptive_batching.target_latency_ms" value: { string_value: "25" } }
                """))
        }
    }
}
