import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// One request an experiment routed (or mirrored to a shadow), as the metrics store keeps it.
public struct ExperimentRecord: Sendable, Equatable {
    /// Seconds since 1970.
    public var time: Double
    /// Name of the experiment that routed the request.
    public var experiment: String
    /// Name of the variant that answered (or, for a shadow, was mirrored to).
    public var variant: String
    /// The request's id (generated when the client sent none), which feedback labels refer to.
    public var requestID: String
    /// The value of the routing key the request was assigned by, nil when it had none.
    public var subject: String?
    /// Time the variant took to answer, in microseconds.
    public var latencyUs: Int64
    /// The answer's confidence (the rows' largest probabilities, averaged), nil without a probability output.
    public var confidence: Double?
    /// The prediction as text (a string output, or several rows joined with ',').
    public var prediction: String?
    /// The prediction when it is one integer (a class index or label): stored as its decimal
    /// text like `prediction`, without making a string on the request path.
    public var predictedInteger: Int64?
    /// nil when the variant answered.
    public var error: String?
    /// Whether this is a shadow's copy of the request rather than the served answer.
    public var shadow: Bool

    /// Makes a record of one routed request from its time, names, latency and outcome.
    public init(
        time: Double, experiment: String, variant: String, requestID: String, subject: String? = nil, latencyUs: Int64,
        confidence: Double? = nil, prediction: String? = nil, error: String? = nil, shadow: Bool = false
    ) {
        self.time = time
        self.experiment = experiment
        self.variant = variant
        self.requestID = requestID
        self.subject = subject
        self.latencyUs = latencyUs
        self.confidence = confidence
        self.prediction = prediction
        self.error = error
        self.shadow = shadow
    }
}
