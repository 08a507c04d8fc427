/// What a periodic guardrail check needs of one variant, kept in memory as records are written (so
/// that a check every few seconds costs the same however large the records table grows): counts,
/// errors, confidence, and the newest latencies in a ring.
struct VariantTally: Sendable {
    var requests = 0
    var errors = 0
    var confidenceSum = 0.0
    var confidenceCount = 0
    /// Requests since the weights last changed (the sample-ratio check).
    var requestsSinceWeights = 0
    private var ring: [Double] = []
    private var next = 0
    let window: Int

    init(window: Int) { self.window = max(window, 1) }

    mutating func add(latencyMs: Double?, confidence: Double?, sinceWeights: Bool = true) {
        requests += 1
        if sinceWeights { requestsSinceWeights += 1 }
        guard let latencyMs else {
            errors += 1
            return
        }
        if let confidence {
            confidenceSum += confidence
            confidenceCount += 1
        }
        if ring.count < window {
            ring.append(latencyMs)
        } else {
            ring[next] = latencyMs
            next = (next + 1) % window
        }
    }

    var latencies: [Double] { ring }

    func data(shadow: Bool, labelled: (labelled: Int, correct: Int)?) -> VariantData {
        var data = VariantData()
        data.requests = requests
        data.errors = errors
        data.latenciesMs = ring
        data.confidenceSum = confidenceSum
        data.confidenceCount = confidenceCount
        data.shadow = shadow
        data.labelled = labelled?.labelled ?? 0
        data.correct = labelled?.correct ?? 0
        return data
    }
}
