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
}
