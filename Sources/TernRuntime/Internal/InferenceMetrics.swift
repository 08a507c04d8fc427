import CoreMetrics

/// The Prometheus series Triton exports for one model version, created once per loaded version so
/// the request path only increments. Names and labels are Triton's, so its dashboards work.
struct InferenceMetrics: Sendable {
    let success: Counter
    let failureOther: Counter
    let failureBackend: Counter
    let failureRejected: Counter
    let inferenceCount: Counter
    let executionCount: Counter
    let requestDuration: Counter
    let queueDuration: Counter
    let computeInputDuration: Counter
    let computeInferDuration: Counter
    let computeOutputDuration: Counter
    let pending: Meter

    init(model: String, version: Int64) {
        let labels = [("model", model), ("version", String(version))]
        success = Counter(label: "nv_inference_request_success", dimensions: labels)
        failureOther = Counter(label: "nv_inference_request_failure", dimensions: labels + [("reason", "OTHER")])
        failureBackend = Counter(label: "nv_inference_request_failure", dimensions: labels + [("reason", "BACKEND")])
        failureRejected = Counter(label: "nv_inference_request_failure", dimensions: labels + [("reason", "REJECTED")])
        inferenceCount = Counter(label: "nv_inference_count", dimensions: labels)
        executionCount = Counter(label: "nv_inference_exec_count", dimensions: labels)
        requestDuration = Counter(label: "nv_inference_request_duration_us", dimensions: labels)
        queueDuration = Counter(label: "nv_inference_queue_duration_us", dimensions: labels)
        computeInputDuration = Counter(label: "nv_inference_compute_input_duration_us", dimensions: labels)
        computeInferDuration = Counter(label: "nv_inference_compute_infer_duration_us", dimensions: labels)
        computeOutputDuration = Counter(label: "nv_inference_compute_output_duration_us", dimensions: labels)
        pending = Meter(label: "nv_inference_pending_request_count", dimensions: labels)
    }

    /// One execution of `rows` batch rows (Triton counts inferences and executions here).
    func recordExecution(rows: Int) {
        inferenceCount.increment(by: rows)
        executionCount.increment()
    }

    /// One successful request.
    func record(_ t: RequestTimings) {
        success.increment()
        requestDuration.increment(by: Int(t.total / 1000))
        queueDuration.increment(by: Int(t.queue / 1000))
        computeInputDuration.increment(by: Int(t.computeInput / 1000))
        computeInferDuration.increment(by: Int(t.computeInfer / 1000))
        computeOutputDuration.increment(by: Int(t.computeOutput / 1000))
    }
}
