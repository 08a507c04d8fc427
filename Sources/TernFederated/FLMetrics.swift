import Foundation
import TernTraining
import Metrics

/// The coordinator's Prometheus metrics (swift-metrics; exported by the serve command's metrics
/// port or `tern fl server --metrics-port`): the round, clients per round, failures by reason,
/// bytes each way, round duration and the privacy spent.
struct FLMetrics: Sendable {
    let round = Gauge(label: "tern_fl_round")
    let connected = Gauge(label: "tern_fl_clients_connected")
    let bytesSent = Counter(label: "tern_fl_bytes_total", dimensions: [("direction", "sent")])
    let bytesReceived = Counter(label: "tern_fl_bytes_total", dimensions: [("direction", "received")])
    let duration = Recorder(label: "tern_fl_round_duration_seconds", aggregate: true)
    let epsilon = Gauge(label: "tern_fl_epsilon")
    let roundsCompleted = Counter(label: "tern_fl_rounds_total")

    func clients(stage: String, _ count: Int) {
        Gauge(label: "tern_fl_round_clients", dimensions: [("stage", stage)]).record(count)
    }

    func failure(_ reason: FLFailureReason, stage: String) {
        Counter(label: "tern_fl_client_failures_total", dimensions: [("reason", reason.rawValue), ("stage", stage)]).increment()
    }

    func skipped(_ reason: EdgeSelection.Skip) {
        Counter(label: "tern_fl_clients_skipped_total", dimensions: [("reason", reason.rawValue)]).increment()
    }
}
