import Testing
import TernCore
@testable import TernRuntime

/// The engine's memory books: what loaded models hold, what loads reserve, and the warm sets a
/// swap keeps for an instant rollback, all counted against the budget.
@Suite struct MemoryLedgerTests {
    @Test func aWarmSetStaysOnTheBooksUntilItsGraceEndsOrARollbackServesIt() {
        let ledger = MemoryLedger(policy: MemoryPolicy(budgetBytes: 300))
        #expect(ledger.reserve(100, for: "m") == nil)
        ledger.settle("m", reserved: 100, holding: 100)
        // A swap: the new set loads beside the old one, which stays warm.
        #expect(ledger.reserve(120, for: "m") == nil)
        ledger.settle("m", reserved: 120, holding: 120, keepsWarm: true)
        #expect(ledger.holding("m") == 120 && ledger.warmHolding("m") == 100)
        // 120 held + 100 warm of 300: 100 more for another model do not fit.
        #expect(ledger.reserve(100, for: "n") != nil)
        // A rollback serves the warm set again: it is what the model holds now.
        ledger.rolledBackToWarm("m")
        #expect(ledger.holding("m") == 100 && ledger.warmHolding("m") == nil)
        #expect(ledger.reserve(100, for: "n") == nil)
        ledger.settle("n", reserved: 100, holding: 100)
        // Another swap, and this time the grace period ends: the warm set leaves the books.
        #expect(ledger.reserve(100, for: "m") == nil)
        ledger.settle("m", reserved: 100, holding: 100, keepsWarm: true)
        #expect(ledger.reserve(50, for: "o") != nil)
        ledger.releaseWarm("m")
        #expect(ledger.reserve(50, for: "o") == nil)
        // An unload drops the holding and any warm set.
        ledger.settle("o", reserved: 50, holding: 50)
        ledger.release("m")
        #expect(ledger.holding("m") == nil && ledger.warmHolding("m") == nil)
    }

    @Test func aFailedLoadGivesItsReservationBackAndKeepsTheWarmSetAsItWas() {
        let ledger = MemoryLedger(policy: MemoryPolicy(budgetBytes: 300))
        #expect(ledger.reserve(100, for: "m") == nil)
        ledger.settle("m", reserved: 100, holding: 100)
        #expect(ledger.reserve(100, for: "m") == nil)
        ledger.settle("m", reserved: 100, holding: 100, keepsWarm: true)
        #expect(ledger.reserve(100, for: "m") == nil)
        ledger.settle("m", reserved: 100, holding: nil, keepsWarm: false)  // rejected by its gates
        #expect(ledger.holding("m") == 100 && ledger.warmHolding("m") == 100)
        // 100 held + 100 warm of 300: the failed load's 100 are free again, not a byte more.
        #expect(ledger.reserve(110, for: "n") != nil && ledger.reserve(100, for: "n") == nil)
    }

    @Test func gpuBytesAreCheckedAgainstTheirOwnGPUAndLoadsInProgressCount() {
        // GPU 0 has 100 bytes free, GPU 1 an unknown amount, GPU 2 200; RAM has 150.
        let policy = MemoryPolicy(
            reserveBytes: 10, availableBytes: { 150 }, gpuAvailableBytes: { [0: 100, 2: 200][$0] })
        let ledger = MemoryLedger(policy: policy)
        #expect(ledger.reserve(MemoryEstimate(hostBytes: 5, gpuBytes: [0: 80]), for: "a") == nil)
        // 80 of GPU 0's 100 are promised to a's load, which has not allocated them yet.
        let second = ledger.reserve(MemoryEstimate(hostBytes: 5, gpuBytes: [0: 30]), for: "b")
        #expect(second?.contains("on GPU 0") == true && second?.contains("more are reserved by loads in progress") == true)
        // A GPU NVML cannot measure is not refused.
        #expect(ledger.reserve(MemoryEstimate(hostBytes: 5, gpuBytes: [1: 1 << 40]), for: "c") == nil)
        // Once a's load settles the GPU's own used memory holds its bytes: the promise is released.
        ledger.settle("a", reserved: MemoryEstimate(hostBytes: 5, gpuBytes: [0: 80]), holding: 85)
        #expect(ledger.reserve(MemoryEstimate(hostBytes: 5, gpuBytes: [0: 30]), for: "b") == nil)
        // With NVML, GPU bytes do not come out of the host's free RAM (195 > 150 would not fit).
        #expect(ledger.reserve(MemoryEstimate(hostBytes: 5, gpuBytes: [2: 195]), for: "d") == nil)
    }

    @Test func withoutAGPUProbeGPUBytesComeOutOfRAMAndTheBudgetCountsBoth() {
        // A Jetson board: no NVML, the GPU allocates from the 100 bytes of free RAM.
        let jetson = MemoryLedger(policy: MemoryPolicy(reserveBytes: 10, availableBytes: { 100 }))
        let refused = jetson.reserve(MemoryEstimate(hostBytes: 10, gpuBytes: [0: 85]), for: "m")
        #expect(refused?.contains("needs about") == true && refused?.contains("must stay free") == true)
        #expect(jetson.reserve(MemoryEstimate(hostBytes: 10, gpuBytes: [0: 80]), for: "m") == nil)
        // The budget is host and GPU bytes together.
        let budget = MemoryLedger(policy: MemoryPolicy(budgetBytes: 100, gpuAvailableBytes: { _ in 1 << 40 }))
        #expect(budget.reserve(MemoryEstimate(hostBytes: 30, gpuBytes: [0: 40, 1: 40]), for: "m") != nil)
        #expect(budget.reserve(MemoryEstimate(hostBytes: 20, gpuBytes: [0: 40, 1: 40]), for: "m") == nil)
        #expect(MemoryEstimate(hostBytes: 20, gpuBytes: [0: 40, 1: 40, 2: 0]).gpuBytes.count == 2)
    }
}
