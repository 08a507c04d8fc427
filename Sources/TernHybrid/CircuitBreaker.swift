/// The remote route's circuit breaker, as a state machine without a clock: after
/// `failureThreshold` consecutive failures it opens (traffic stays local); after `openNs` one
/// probe request may go out (half-open); a successful probe closes it, a failed one opens it again.
struct CircuitBreaker: Sendable, Equatable {
    enum State: String, Sendable, Equatable { case closed, open, halfOpen = "half_open" }

    let failureThreshold: Int
    let openNs: UInt64
    private(set) var state = State.closed
    private var failures = 0
    private var openedAtNs: UInt64 = 0
    private var probeOut = false

    init(failureThreshold: Int, openNs: UInt64) {
        self.failureThreshold = max(failureThreshold, 1)
        self.openNs = openNs
    }

    /// Whether a request may go to the remote now (taking the probe slot when half-open).
    mutating func allow(nowNs: UInt64) -> Bool {
        switch state {
        case .closed: return true
        case .open:
            guard nowNs - min(nowNs, openedAtNs) >= openNs else { return false }
            state = .halfOpen
            probeOut = true
            return true
        case .halfOpen:
            guard !probeOut else { return false }
            probeOut = true
            return true
        }
    }

    mutating func recordSuccess() {
        state = .closed
        failures = 0
        probeOut = false
    }

    mutating func recordFailure(nowNs: UInt64) {
        failures += 1
        probeOut = false
        if state == .halfOpen || failures >= failureThreshold {
            state = .open
            openedAtNs = nowNs
        }
    }
}
